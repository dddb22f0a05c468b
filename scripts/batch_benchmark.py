"""Batch benchmark: N real pairs on a two-worker local Dask cluster, one worker killed mid-run, then a re-run.

The pairs are volkov_s1s2_10m validation pairs (PNG, no georeference: each runs the global search). The batch runs as
the ``osreg batch`` console script; once the first pair folder appears, one worker process of its cluster is killed
with SIGKILL (its nanny starts a new one and the scheduler reschedules its pair). Then the same command runs again and
must skip every pair.

    python scripts/batch_benchmark.py --data ../shared/data --pairs 12 -o /tmp/osreg_batch
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("OSREG_DATA", "../shared/data"))
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("-o", "--out", required=True, help="work folder (replaced)")
    args = ap.parse_args()
    work = Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    d = Path(args.data) / "volkov_s1s2_10m"
    names = sorted(p.name for p in (d / "opt").glob("*.png"))[-args.pairs:]  # the last ones: the validation split
    with open(work / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["optical", "sar", "name"])
        for n in names:
            w.writerow([str((d / "opt" / n).resolve()), str((d / "sar" / n).resolve()), n[:-4]])
    cmd = [str(Path(sys.executable).with_name("osreg")), "-q", "batch", str(work / "pairs.csv"), "-o",
           str(work / "out"), "--workers", "2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    while proc.poll() is None:
        done = list((work / "out").glob("*/report.json")) if (work / "out").exists() else []
        if killed is None and done:
            workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                       if "spawn_main" in " ".join(c.cmdline())]
            if workers:
                killed = {"pid": workers[0].pid, "after_s": round(time.perf_counter() - t0, 1),
                          "pairs_done_then": len(done)}
                os.kill(workers[0].pid, signal.SIGKILL)
                print(f"killed worker {killed}", file=sys.stderr)
        time.sleep(0.5)
    out, err = proc.communicate()
    first = {"exit": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1), "stdout": out.strip(),
             "killed": killed}
    t1 = time.perf_counter()
    again = subprocess.run(cmd, capture_output=True, text=True)
    second = {"exit": again.returncode, "wall_s": round(time.perf_counter() - t1, 1), "stdout": again.stdout.strip()}
    with open(work / "out" / "summary.csv", newline="") as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    result = {"command": " ".join(cmd), "pairs": len(names), "first_run": first, "re_run": second,
              "statuses_after_re_run": statuses}
    print(json.dumps(result, indent=2))
    if err.strip():
        print(err[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()

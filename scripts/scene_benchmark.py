"""Scene benchmark: large georeferenced pairs with a known smooth displacement field, built from shared data.

The optical scene is a mosaic of real Sentinel-2 tiles of volkov_s1s2_10m (1024 px, each turned/flipped by the
seed); the SAR scene is the mosaic of their Sentinel-1 tiles, each first shifted by the translation the independent
alignment check measured (only pairs whose four check windows agree), then displaced by a known field: a ~40 px
offset plus a smooth local field of up to 6 px (:class:`osreg.eval.scene_case.SceneCase`). Both carry the same
geotransform, so the georeference is wrong by that field. Each size is registered by the ``osreg register`` console
script with default options (and ``--model affine`` for comparison) in its own process; the residual is the
distance between the written displacement field and the truth at 4000 random pixels, the peak memory the child
process's maximum resident set.

Ground truth caveat: the tiles' own S1/S2 alignment is good to about 0.5-1 px after the shift (the check's
precision), so residuals below ~0.5 px cannot be told apart from that.

    python scripts/scene_benchmark.py --data ../shared/data --sizes 1024,8192,16384 -o reports/scenes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from osreg.eval.scene_case import SceneCase, crop_case, field_residuals, write_scene_case


def volkov_tiles(data: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Checked volkov pairs, the SAR shifted onto the optical image by the check's translation."""
    d = data / "volkov_s1s2_10m"
    pairs, names = [], []
    with open(d / "alignment_check.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["n_strong_quadrants"] != "4" or float(row["quadrant_spread_px"]) > 1.5:
                continue
            opt = cv2.imread(str(d / "opt" / row["pair"]), cv2.IMREAD_COLOR)[..., ::-1].transpose(2, 0, 1)
            sar = cv2.imread(str(d / "sar" / row["pair"]), cv2.IMREAD_UNCHANGED)
            dx, dy = float(row["median_dx_px"]), float(row["median_dy_px"])
            # SAR = optical + (dx, dy): the aligned SAR at p is the SAR at p + (dx, dy)
            M = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
            sar = cv2.warpAffine(sar, M, sar.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)
            pairs.append((np.ascontiguousarray(opt), sar))
            names.append(row["pair"])
    return pairs, names


def run_measured(cmd: list[str]) -> tuple[int, float, float]:
    """Exit code, wall seconds and peak resident memory (MB) of a command run in a fresh child."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.run(sys.argv[1:])"
             ".returncode; print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)"
             ".ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    rc, wall, peak = out.stdout.split()[-3:]
    if int(rc) != 0:
        sys.stderr.write(out.stderr[-3000:])
    return int(rc), float(wall), float(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("OSREG_DATA", "../shared/data"))
    ap.add_argument("--sizes", default="1024,8192,16384", help="1024 is a centre crop of the 8192 case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/osreg_scene_benchmark", help="where the scenes and runs are written")
    ap.add_argument("--affine", action="store_true", help="also run --model affine at every size")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiles, names = volkov_tiles(Path(args.data))
    print(f"{len(tiles)} checked volkov pairs as tiles", file=sys.stderr)
    results = []
    for size in sizes:
        base = 8192 if size == 1024 else size
        case_dir = work / f"case_{base}"
        if not (case_dir / "case.json").exists():
            t = time.perf_counter()
            write_scene_case(tiles, SceneCase.draw(base, 40.0, 6.0, seed=args.seed), case_dir)
            print(f"wrote the {base} px case in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        if size == 1024:
            c = (8192 - 1024) // 2
            files = crop_case(case_dir, work / "case_1024_crop", c, c, 1024)
        else:
            files = {"optical": str(case_dir / "optical.tif"), "sar": str(case_dir / "sar.tif"),
                     "case": str(case_dir / "case.json")}
        for model in ["auto"] + (["affine"] if args.affine else []):
            run_dir = work / f"run_{size}_{model}"
            cmd = [str(Path(sys.executable).with_name("osreg")), "-q", "register", files["optical"], files["sar"],
                   "-o", str(run_dir), "--overwrite", "--threads", str(args.threads), "--model", model]
            if size == 1024:
                cmd.append("--scene")  # the same workflow on the crop (a 1024 px pair would be a chip)
            rc, wall, peak = run_measured(cmd)
            row = {"size": size, "model_option": model, "exit": rc, "wall_s": round(wall, 1),
                   "peak_mb": round(peak)}
            if rc == 0:
                d = field_residuals(run_dir / "displacement_field.tif", files["case"], seed=args.seed)
                rep = json.loads((run_dir / "report.json").read_text())
                row.update({"median_px": round(float(np.median(d)), 3), "p95_px": round(float(np.percentile(d, 95)), 3),
                            "max_px": round(float(d.max()), 2), "model": rep["model"],
                            "windows": rep["scene"]["windows_with_tie_points"],
                            "runtime_s": {k: round(v, 1) for k, v in rep["runtime_s"].items()}})
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
    meta = {"command": " ".join(sys.argv), "tiles": names, "seed": args.seed, "results": results,
            "cpu_count": os.cpu_count(), "threads": args.threads,
            "max_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (out / "summary.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    lines = ["| size | --model | exit | model used | windows | median px | p95 px | max px | wall s | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['size']} | {r['model_option']} | {r['exit']} | {r.get('model', '')} | "
                     f"{r.get('windows', '')} | {r.get('median_px', '')} | {r.get('p95_px', '')} | "
                     f"{r.get('max_px', '')} | {r['wall_s']} | {r['peak_mb']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

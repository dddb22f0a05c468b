"""CSTF throughput on 512 x 512 pairs on this CPU: the matcher alone (pre-aligned pair) and with the global search
(verified by CSTF itself or by CFOG). The pairs are aligned, so the search mostly keeps the pair as given: the cost
of the search on deformed pairs is in the benchmark's s/pair.

Pairs: the centre 512 px crops of the volkov_s1s2_10m validation pairs (as the benchmark reads them).

    python scripts/cstf_throughput.py --data ../shared/data --threads 2 [--options max_keypoints=256]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from osreg.matchers import build_matcher, method_setup
from osreg.pipeline import read_inputs
from osreg.preprocess import prepare_optical, prepare_sar
from osreg.runtime import set_threads
from osreg.train.data import volkov_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("OSREG_DATA", "../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="cstf")
    ap.add_argument("--options", default="", help="more method options, key=value,... (e.g. max_keypoints=256)")
    args = ap.parse_args()
    set_threads(args.threads)
    d = os.path.join(args.data, "volkov_s1s2_10m")
    names = sorted(n for n in os.listdir(os.path.join(d, "opt")) if volkov_split(n) == "val")
    pairs = []
    for n in names:
        o, s = read_inputs(os.path.join(d, "opt", n), os.path.join(d, "sar", n))
        a, b = prepare_optical(o), prepare_sar(s)
        c = (a.shape[0] - 512) // 2
        pairs.append((a[c:c + 512, c:c + 512].copy(), b[c:c + 512, c:c + 512].copy()))
    result = {"pairs": len(pairs), "threads": args.threads}
    variants = {"search_off": {"search": "off"}, "search_global": {"search": "global"},
                "search_global_cfog_verifier": {"search": "global", "global_verifier": "cfog"}}
    extra = dict(item.split("=", 1) for item in args.options.split(",") if item)
    result["options"] = extra
    for label, options in variants.items():
        m = build_matcher(method_setup(args.method, {**extra, **options}), georeferenced=False)
        m.match(*pairs[0])  # warm-up (weights, allocations)
        t = time.perf_counter()
        n = [len(m.match(a, b)) for a, b in pairs]
        dt = (time.perf_counter() - t) / len(pairs)
        result[label] = {"s_per_pair": round(dt, 3), "pairs_per_s": round(1 / dt, 2),
                         "median_matches": float(np.median(n))}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

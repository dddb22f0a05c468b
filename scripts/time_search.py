"""Time the global search and CFOG with different batch sizes (``CHUNK_BYTES``), variants alternated in one process.

Three measurements on pairs under the paper deformation (centre 512 px crops, seed 0):
- ``search``: the escalated search alone (192 px, rescoring at 384 px), volkov 046 and 048;
- ``cfog``: CFOG alone on aligned volkov 061, 063 and 075;
- ``pipeline``: the default ``cfog`` (pair as given, both search levels, verification) on three pairs nothing
  registers (volkov 061, lzk 1_tile_0_492 and 2_tile_0_0).

    python scripts/time_search.py --data ../shared/data --threads 2 [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from osreg.eval.benchmark import prepare_pair
from osreg.eval.datasets import load_pairs
from osreg.runtime import set_threads

VARIANTS = {"64 MB / one batch (before)": (64e6, 1e12), "8 MB / 4 MB (shipped)": (8e6, 4e6)}


def _pairs(data: str, names: tuple[str, ...], protocol: str):
    specs = load_pairs(data, ["volkov_s1s2_10m", "lzk2211_xiangjiang"], volkov_gt="checked")
    return [prepare_pair(s, protocol, 512, 0) for s in specs if s.name in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("OSREG_DATA", "../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    set_threads(args.threads)
    import osreg.matchers.cfog as cfog
    import osreg.matchers.coarse_search as gs
    from osreg.matchers import build_matcher, method_setup

    search_pairs = _pairs(args.data, ("046", "048"), "paper")
    cfog_pairs = _pairs(args.data, ("061", "063", "075"), "aligned")
    failing = _pairs(args.data, ("061", "1_tile_0_492", "2_tile_0_0"), "paper")
    escalated = gs.GlobalSearchConfig().escalated()
    matcher = build_matcher(method_setup("cfog", {}), georeferenced=False)
    plain = cfog.CFOGMatcher()
    jobs = {
        "search": (search_pairs, lambda p: gs.search_hypotheses(p.img0, p.mask0, p.img1, p.mask1, escalated)),
        "cfog": (cfog_pairs, lambda p: plain.match(p.img0, p.img1, p.mask0, p.mask1)),
        "pipeline": (failing, lambda p: matcher.match(p.img0, p.img1, p.mask0, p.mask1)),
    }
    out: dict[str, dict[str, list[float]]] = {}
    for job, (pairs, run) in jobs.items():
        run(pairs[0])  # warm-up
        for _ in range(args.rounds):
            for label, (search_bytes, cfog_bytes) in VARIANTS.items():
                gs.CHUNK_BYTES, cfog.CHUNK_BYTES = search_bytes, cfog_bytes
                t = time.perf_counter()
                for p in pairs:
                    run(p)
                out.setdefault(job, {}).setdefault(label, []).append(round((time.perf_counter() - t) / len(pairs), 3))
        print(json.dumps({job: out[job]}), flush=True)


if __name__ == "__main__":
    main()

"""Where the global search's coarse stage ranks the right rotation and scale (docs/search.md).

For every pair of the chosen datasets and split, under a benchmark protocol with seeds 0 and 1, on the 512 px
crops the benchmark uses, runs :func:`osreg.matchers.global_search.search_hypotheses` at CFOG's working resolution
and prints the rank of the first hypothesis whose median error over the benchmark's evaluation points (a 10 x 10
grid, or the tie points) is under 8 % of the image side,
then the share of cases ranked first, in the first 3 and in the first 10, and the seconds per case.

    python scripts/rank_search.py --data ../shared/data --datasets volkov_s1s2_10m --split train --protocol paper \
        --options "coarse_side=96,rescore_side=256"
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from osreg.eval.benchmark import pair_split, prepare_pair
from osreg.eval.datasets import load_pairs
from osreg.geometry import apply_transform
from osreg.matchers import method_setup
from osreg.matchers.cfog import CFOGMatcher
from osreg.matchers.coarse_search import search_hypotheses
from osreg.runtime import set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--datasets", default="volkov_s1s2_10m")
    ap.add_argument("--split", default="train", choices=("train", "val", "all"))
    ap.add_argument("--protocol", default="paper", choices=("paper", "large-deformation", "self-check"))
    ap.add_argument("--options", default="", help="GlobalSearchConfig fields, e.g. coarse_side=64,structure_power=0")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_threads(args.threads)
    # the registry types and checks the options as `cfog[global_...]` would
    opts = dict(item.split("=", 1) for item in args.options.split(",") if item)
    config = method_setup("cfog", {f"global_{k}": v for k, v in opts.items()}).global_search
    pairs = [p for p in load_pairs(args.data, args.datasets.split(","), "checked")
             if args.split == "all" or pair_split(p) == args.split]
    cfog = CFOGMatcher()
    ranks, seconds = [], 0.0
    for spec in pairs:
        for seed in map(int, args.seeds.split(",")):
            pp = prepare_pair(spec, args.protocol, 512, seed)
            h, w = pp.img0.shape
            points = pp.gt.eval_points(w, h)
            truth = pp.gt.map(points)
            wp = cfog.working_pair(pp.img0, pp.img1, pp.mask0, pp.mask1)
            t = time.perf_counter()
            hyps = search_hypotheses(wp.image0, wp.mask0, wp.image1, wp.mask1, config)
            seconds += time.perf_counter() - t
            back = np.diag([1 / wp.scale1, 1 / wp.scale1, 1]), np.diag([wp.scale0, wp.scale0, 1])
            errs = [float(np.median(np.linalg.norm(apply_transform(back[0] @ hy.H @ back[1], points) - truth, axis=1)))
                    for hy in hyps]
            rank = next((i for i, e in enumerate(errs) if e < 0.08 * max(h, w)), None)
            ranks.append(99 if rank is None else rank)
            print(f"{spec.dataset} {spec.name} seed {seed}: rotation {pp.rotation_deg:.1f}, scale {pp.scale:.3f}, "
                  f"rank {'-' if rank is None else rank}", flush=True)
    r = np.array(ranks)
    print(f"{len(r)} cases: first {100 * (r == 0).mean():.1f} %, top 3 {100 * (r < 3).mean():.1f} %, "
          f"top 10 {100 * (r < 10).mean():.1f} %, {seconds / len(r):.2f} s a case")


if __name__ == "__main__":
    main()

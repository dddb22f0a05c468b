"""Calibrate the early stop of the rotation/scale search (``accept_inliers``, ``accept_ratio``) on training pairs.

Usage: python scripts/calibrate_search.py METHOD OUT_CSV [DATA_DIR] [--max-pairs N] [--threads N]
                                         [--prescreen-sides 128,160,192]

Scores every search hypothesis (exhaustive search) of a dense matcher (``tar`` or ``promptmid``) on the training
split of ``volkov_s1s2_10m`` (never the held-out pairs), under the benchmark's aligned and large-deformation
protocols with seed 1 (the benchmark uses seed 0), and writes one row per hypothesis: its coarse inliers and
matches, and the error of its footprint against the ground truth (median over a 10x10 grid of the optical crop,
in full-resolution px of the turned and scaled SAR). Then prints, for candidate thresholds, how many wrong
hypotheses (footprint error over 16 px) would have been accepted and how many pairs would stop early.

With ``--prescreen-sides``, every hypothesis is also scored at each of those lower resolutions (columns
``inliers_<side>``, ``matches_<side>``), and the report adds, for each prescreen side and number kept, in how many
cases a search with that prescreen picks a right hypothesis, against the exhaustive search at ``search_side``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import cv2
import numpy as np
import torch

from osreg.eval.benchmark import prepare_pair
from osreg.eval.datasets import load_pairs
from osreg.geometry import apply_transform
from osreg.matchers import create_matcher
from osreg.matchers.search import SearchConfig, SearchLevel, SearchStage, resize_with_matrix, rotate_with_matrix
from osreg.train.data import volkov_split

WRONG_PX = 16.0


def hypothesis_rows(search: SearchStage, pp, prescreen_sides: tuple[int, ...] = ()) -> list[dict]:
    """Exhaustively scored hypotheses of one prepared pair, with footprint errors (and their scores at the
    prescreen resolutions)."""
    wp = search.working_pair(pp.img0, pp.img1, pp.mask0, pp.mask1)
    small0, small1, m0, m1, s0, s1 = wp.image0, wp.image1, wp.mask0, wp.mask1, wp.scale0, wp.scale1
    h, w = small0.shape
    grid = np.stack(np.meshgrid(np.linspace(0, w - 1, 10), np.linspace(0, h - 1, 10)), -1).reshape(-1, 2)
    true1 = pp.gt.map(grid / s0) * s1  # SAR px at working resolution
    rows = []
    low = {side: SearchLevel(search.inner, small0, m0, side, search.config.search_side) for side in prescreen_sides}
    for r in search.hypotheses(small0, m0, small1, m1):
        turned, turned_mask, R = rotate_with_matrix(small1, m1, r["rotation"])
        _, _, S = resize_with_matrix(turned, turned_mask, r["scale"])
        expected = apply_transform(S @ R, true1)
        err = np.inf if r["footprint"] is None else float(
            np.median(np.linalg.norm(apply_transform(r["footprint"], grid) - expected, axis=1)))
        row = {"rotation": r["rotation"], "scale": r["scale"], "inliers": r["inliers"], "matches": r["matches"],
               "footprint_error_px": err}
        for side, level in low.items():
            lr = level.score(small1, m1, r["rotation"], r["scale"])
            row[f"inliers_{side}"], row[f"matches_{side}"] = (-1, -1) if lr is None else (lr["inliers"], lr["matches"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=["tar", "promptmid"])
    ap.add_argument("out_csv")
    ap.add_argument("data_dir", nargs="?", default=os.environ.get("OSREG_DATA", "../shared/data"))
    ap.add_argument("--max-pairs", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prescreen-sides", default="", help="comma-separated prescreen resolutions to score too")
    args = ap.parse_args()
    sides = tuple(int(v) for v in args.prescreen_sides.split(",") if v)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    search = SearchStage(create_matcher(args.method), SearchConfig(accept_inliers=0, prescreen_side=0))
    specs = [p for p in load_pairs(args.data_dir, ["volkov_s1s2_10m"], "checked")
             if volkov_split(p.name + ".png") == "train"]
    if args.max_pairs:
        specs = specs[:args.max_pairs]
    out = []
    for i, spec in enumerate(specs):
        for protocol in ("aligned", "large-deformation"):
            pp = prepare_pair(spec, protocol, 512, seed=1)
            for row in hypothesis_rows(search, pp, sides):
                out.append({"pair": spec.name, "protocol": protocol, **row})
        print(f"{i + 1}/{len(specs)} {spec.name}", file=sys.stderr, flush=True)
    with open(args.out_csv, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(out[0]))
        wr.writeheader()
        wr.writerows(out)
    report(out)
    if sides:
        report_prescreen(out, sides)


def report(rows: list[dict]) -> None:
    """For each candidate (inliers, ratio): wrong hypotheses accepted; pairs that stop early on a right one."""
    cases = sorted({(r["pair"], r["protocol"]) for r in rows})
    print("accept_inliers accept_ratio wrong_accepts early_right_stops cases")
    for ratio in (0.3, 0.5, 0.7):
        for n in (8, 12, 16, 20, 25, 30, 40):
            wrong = early = 0
            for case in cases:
                # hypotheses in the order the search tries them (rows are written in that order)
                for r in (r for r in rows if (r["pair"], r["protocol"]) == case):
                    if r["inliers"] >= n and r["inliers"] >= ratio * r["matches"]:
                        if r["footprint_error_px"] > WRONG_PX:
                            wrong += 1
                        else:
                            early += 1
                        break
            print(f"{n:14d} {ratio:12.1f} {wrong:13d} {early:17d} {len(cases):5d}")


def report_prescreen(rows: list[dict], sides: tuple[int, ...]) -> None:
    """Cases where the pick (most inliers at search resolution among the first hypothesis and the prescreen's
    ``keep`` best of the rest) is right, for each prescreen side and ``keep``; the exhaustive pick for reference."""
    cases = sorted({(r["pair"], r["protocol"]) for r in rows})

    def right(candidates: list[dict]) -> bool:
        best = max(candidates, key=lambda r: (r["inliers"], r["matches"]))
        return best["footprint_error_px"] <= WRONG_PX

    by_case = {c: [r for r in rows if (r["pair"], r["protocol"]) == c] for c in cases}  # in search order
    print(f"exhaustive: right pick in {sum(right(h) for h in by_case.values())} of {len(cases)} cases")
    print("prescreen_side keep right_picks cases")
    for side in sides:
        for keep in (3, 4, 6, 8, 10):
            n = 0
            for hyps in by_case.values():
                rest = sorted(hyps[1:], key=lambda r: (r[f"inliers_{side}"], r[f"matches_{side}"]), reverse=True)
                n += right([hyps[0], *rest[:keep]])
            print(f"{side:14d} {keep:4d} {n:11d} {len(cases):5d}")


if __name__ == "__main__":
    main()

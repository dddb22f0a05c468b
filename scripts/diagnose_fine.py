"""How much of a known offset TAR's fine stage recovers, on volkov training pairs (docs/tar.md, "Fine stage").

The SAR of each aligned pair is moved by (dx, dy) px (one cubic resampling; whole pixels copy it exactly), TAR's
coarse pass matches it with the optical, and each coarse match is refined by the model's fine stage. Printed: the
error of the coarse cell centres and of the refined points, over the matches whose coarse cell lies within 5 px of
the truth.

    python scripts/diagnose_fine.py ../shared/data --shift 3 -2 [--weights RUN/last.pt]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from osreg.eval.benchmark import prepare_pair
from osreg.eval.datasets import load_pairs
from osreg.geometry import apply_transform, rectify
from osreg.matchers.search import pad_to_multiple
from osreg.matchers.tar import TARMatcher

TRUSTED = "019,020,048,049,062,073,076,088"  # training pairs whose alignment check agrees (fine truth trusted)


def pair_errors(matcher: TARMatcher, spec, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    pp = prepare_pair(spec, "aligned", 512, 0)
    move = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1.0]])  # moved px -> SAR px
    sar, mask = rectify(pp.img1, pp.mask1, move, pp.img0.shape)
    quick = matcher.coarse_match(pp.img0, pp.mask0, sar, mask)
    k0, k1 = quick.keypoints0, quick.keypoints1
    truth = apply_transform(np.linalg.inv(move), pp.gt.map(k0))
    a0, _ = pad_to_multiple(pp.img0, pp.mask0, 8)
    a1, _ = pad_to_multiple(sar, mask, 8)
    with torch.inference_mode():
        out = matcher.model(torch.from_numpy(a0)[None, None], torch.from_numpy(a1)[None, None], matcher.text)
        t0, t1 = torch.from_numpy(k0).float(), torch.from_numpy(k1).float()
        w0, w1 = int(out["coarse_shape0"][1]), int(out["coarse_shape1"][1])
        i = (t0[:, 1] // 8).long() * w0 + (t0[:, 0] // 8).long()
        j = (t1[:, 1] // 8).long() * w1 + (t1[:, 0] // 8).long()
        off, _ = matcher.model.fine_refine(out, torch.zeros(len(i), dtype=torch.long), i, j, (t0 - 0.5) / 2,
                                           (t1 - 0.5) / 2)
    refined = ((t1 - 0.5) / 2 + off).numpy() * 2 + 0.5
    return np.linalg.norm(truth - k1, axis=1), np.linalg.norm(truth - refined, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="folder holding volkov_s1s2_10m")
    ap.add_argument("--shift", nargs=2, type=float, default=(3.0, -2.0), metavar=("DX", "DY"))
    ap.add_argument("--weights", default=None, help="TAR checkpoint (default: the shipped weights)")
    ap.add_argument("--pairs", default=TRUSTED, help="comma-separated volkov pair names")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    matcher = TARMatcher(weights=args.weights)
    specs = {p.name: p for p in load_pairs(args.data, ["volkov_s1s2_10m"], "checked")}
    coarse, fine = zip(*(pair_errors(matcher, specs[n], tuple(args.shift)) for n in args.pairs.split(",")))
    coarse, fine = np.concatenate(coarse), np.concatenate(fine)
    near = coarse <= 5
    for name, e in (("coarse cell centre", coarse[near]), ("fine stage", fine[near])):
        print(f"{name:20s} median {np.median(e):.2f} px, within 1 px {np.mean(e <= 1):.0%}, "
              f"within 3 px {np.mean(e <= 3):.0%} ({near.sum()} matches)")


if __name__ == "__main__":
    main()

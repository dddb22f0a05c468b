"""Why TAR's own grid search fails (issue 13, part 4): how far TAR's coarse matching tolerates a rotation and a scale
it was not given.

Same-modality self-check, the cheapest reproduction: the optical crop of each held-out volkov pair against itself
turned by ``r`` degrees and scaled by ``s`` (one linear warp), matched by TAR's coarse pass alone (what the grid search
scores its hypotheses with) at the search resolution (256 px). Printed per (r, s): the mean number of coarse matches,
of correct ones (within 8 px of the truth) and of inliers of the loose similarity fit the search uses. TAR's grid
steps 45 degrees and a factor 1.4 in scale, so a hypothesis can leave up to 22.5 degrees and a factor 1.18 to the
network.

    python scripts/diagnose_tar_rotation.py ../shared/data [--weights RUN/last.pt] [--threads 2]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from osreg.eval.benchmark import prepare_pair
from osreg.eval.datasets import load_pairs
from osreg.eval.deform import warp_image
from osreg.geometry import GeometryConfig, apply_transform, estimate_transform
from osreg.matchers import create_matcher
from osreg.matchers.search import resize_with_matrix
from osreg.runtime import set_threads
from osreg.train.data import volkov_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", type=int, default=256)
    args = ap.parse_args()
    set_threads(args.threads)
    tar = create_matcher("tar", weights=args.weights)
    specs = [p for p in load_pairs(args.data_dir, ["volkov_s1s2_10m"], "checked")
             if volkov_split(p.name + ".png") == "val"]
    images = []
    for spec in specs:
        pp = prepare_pair(spec, "aligned", 512, 0)
        img, mask, _ = resize_with_matrix(pp.img0, pp.mask0, args.side / max(pp.img0.shape))
        images.append((img, mask))
    print("| rotation deg | scale | coarse matches | correct (8 px) | similarity inliers |")
    print("|---|---|---|---|---|")
    for scale in (1.0, 0.85, 1.18):
        for rot in (0, 5, 10, 15, 20, 25, 30, 40):
            stats = []
            for img, mask in images:
                h, w = img.shape
                D = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rot, scale), [0, 0, 1]])
                warped, wmask = warp_image(img, mask, D)
                res = tar.coarse_match(img, mask, warped.astype(np.float32), wmask)
                err = np.linalg.norm(apply_transform(D, res.keypoints0) - res.keypoints1, axis=1)
                est = estimate_transform(res.keypoints0, res.keypoints1,
                                         GeometryConfig(model="similarity", threshold_px=8.0))
                stats.append((len(res), int((err <= 8).sum()), est.n_inliers))
            m = np.mean(stats, axis=0)
            print(f"| {rot} | {scale} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Choose CSTF's min_confidence on volkov *training* pairs (never the held-out ones): for residual deformations of
training crops, the share of kept matches within 3 px of the truth and the matches kept per crop, per threshold.

    python scripts/calibrate_cstf.py runs/cstf_v2/last.pt --data ../shared/data
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from osreg.matchers.cstf.config import CSTFConfig
from osreg.matchers.cstf.model import CSTFNet, decode
from osreg.train.data import load_volkov, make_batch
from osreg.train.train_cstf import compute_losses, residual_augment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ck = torch.load(args.checkpoint, weights_only=True)
    model = CSTFNet(CSTFConfig.from_dict(ck["model_config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    pairs = [p for p in load_volkov(args.data, "train") if p.fine_ok]
    rng = np.random.default_rng(7)
    rows = []
    with torch.no_grad():
        for _ in range(args.batches):
            opt, sar, valid, H, _ = make_batch(pairs, rng, 4, residual_augment())
            _, _, items = compute_losses(model, opt, sar, valid, H, rng, negatives=False)
            for logits, target, d in items:
                # the candidates' own distribution (the no-match class set aside), and the no-match probability
                disp, mass, _ = decode(logits, model.cfg.cells, model.cfg.stride)
                p_none = logits.softmax(1)[:, -1].numpy()
                e = np.linalg.norm(disp.numpy() - d, axis=1)
                rows.append((mass.numpy(), p_none, e))
    out = {}
    for none_max in (0.5, 0.9, 0.99, 1.01):
        for thr in (0.1, 0.2, 0.3, 0.5):
            kept = [(m >= thr) & (pn < none_max) for m, pn, _ in rows]
            e = np.concatenate([r[2][k] for r, k in zip(rows, kept)])
            out[f"no_match<{none_max} conf>={thr}"] = {
                "matches_per_crop": round(len(e) / len(rows), 1),
                "within_3px": round(float((e < 3).mean()) if len(e) else 0.0, 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

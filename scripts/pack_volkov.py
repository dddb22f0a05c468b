"""Pack volkov's training split small enough to travel to a GPU machine (``scripts/train_on_gpu.sh``).

    python scripts/pack_volkov.py ../shared/data .gpu/data [--max-mb 60]

Writes DEST/volkov_s1s2_10m/{opt,sar}/NAME.png and alignment_check.csv for the training pairs only (the held-out
15 % stay behind): the SAR as it is (8-bit), the optical as its 8-bit luminance (what ``prepare_optical`` reduces an
RGB image to before its stretch). Pairs are added until the folder would pass ``--max-mb``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import cv2
import numpy as np

from osreg.io.raster import read_raster
from osreg.train.data import volkov_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("dest")
    ap.add_argument("--max-mb", type=float, default=60.0)
    args = ap.parse_args()
    src = Path(args.data_dir) / "volkov_s1s2_10m"
    dst = Path(args.dest) / "volkov_s1s2_10m"
    (dst / "opt").mkdir(parents=True, exist_ok=True)
    (dst / "sar").mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(open(src / "alignment_check.csv", newline="")))
    kept, total = [], 0
    for r in rows:
        if volkov_split(r["pair"]) != "train":
            continue
        opt = read_raster(src / "opt" / r["pair"], "optical").data.astype(np.float32)
        lum = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), opt, axes=1) if len(opt) == 3 else opt[0]
        ok, png = cv2.imencode(".png", np.clip(lum + 0.5, 0, 255).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        size = len(png) + (src / "sar" / r["pair"]).stat().st_size
        if total + size > args.max_mb * 1e6:
            break
        (dst / "opt" / r["pair"]).write_bytes(png.tobytes())
        shutil.copyfile(src / "sar" / r["pair"], dst / "sar" / r["pair"])
        kept.append(r)
        total += size
    with open(dst / "alignment_check.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    print(f"{len(kept)} training pairs, {total / 1e6:.1f} MB in {dst}")


if __name__ == "__main__":
    main()

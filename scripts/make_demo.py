"""Make the bundled demo pair (data/demo/) from volkov_s1s2_10m pair 256.

Usage: python scripts/make_demo.py [DATA_DIR]   (DATA_DIR defaults to $OSREG_DATA or ../shared/data)

A 384x384 centre crop of a Sentinel-2 RGB / Sentinel-1 VH pair (10 m, EPSG:3395), written as GeoTIFFs with
the georeference from the dataset's metadata.json. The SAR's geotransform is shifted by a simulated geocoding
error of +63 m east, -38 m north (6.3 px, 3.8 px), so that the demo has a misregistration to recover:
registering should find the SAR content displaced by about (+6.3, +3.8) px on the optical grid, plus the
pair's own residual (the dataset's alignment check gives 0.38, 0.49 px for this pair).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

PAIR = "256.png"
CROP = (320, 320, 384)  # row0, col0, size
GEOCODING_ERROR_M = (63.0, -38.0)  # added to the SAR geotransform origin (x east, y north)
OUT = Path(__file__).resolve().parent.parent / "data" / "demo"


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OSREG_DATA", "../shared/data"))
    folder = data / "volkov_s1s2_10m"
    meta = {m["fragment_filename"]: m for m in json.loads((folder / "metadata.json").read_text())}[PAIR]
    corners = np.array(meta["corners_EPSG:3395"])
    left, top = corners[:, 0].min(), corners[:, 1].max()
    opt = np.asarray(Image.open(folder / "opt" / PAIR).convert("RGB"))
    sar = np.asarray(Image.open(folder / "sar" / PAIR))
    px = (corners[:, 0].max() - left) / opt.shape[1]
    r0, c0, n = CROP
    t_opt = Affine(px, 0, left + c0 * px, 0, -px, top - r0 * px)
    t_sar = Affine(px, 0, t_opt.c + GEOCODING_ERROR_M[0], 0, -px, t_opt.f + GEOCODING_ERROR_M[1])
    OUT.mkdir(parents=True, exist_ok=True)
    common = {"driver": "GTiff", "height": n, "width": n, "dtype": "uint8", "crs": "EPSG:3395",
              "compress": "deflate", "tiled": True, "blockxsize": 128, "blockysize": 128}
    with rasterio.open(OUT / "optical_s2_rgb.tif", "w", count=3, transform=t_opt, **common) as dst:
        dst.write(np.moveaxis(opt[r0 : r0 + n, c0 : c0 + n], -1, 0))
        for i, name in enumerate(("B4 red", "B3 green", "B2 blue"), 1):
            dst.set_band_description(i, name)
    with rasterio.open(OUT / "sar_s1_vh.tif", "w", count=1, transform=t_sar, **common) as dst:
        dst.write(sar[r0 : r0 + n, c0 : c0 + n][None])
        dst.set_band_description(1, "VH")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

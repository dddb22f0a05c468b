"""Synthetic whole scenes with a known displacement field, built from real optical–SAR tiles.

A mosaic of real co-registered tile pairs (each turned and flipped by the seed) makes an optical scene of any size;
the SAR scene is the SAR mosaic displaced by a known field ``v``: SAR pixel ``q`` shows the mosaic at ``q + v(q)``.
``v`` is a global offset (the georeference's error) plus a smooth local field (sums of long sinusoids, scaled to a
given largest magnitude). Both are georeferenced with the same geotransform, so the georeference is wrong by ``v``.
The true registration maps optical pixel ``p`` to the SAR pixel ``q`` with ``q + v(q) = p``. Files are written block
by block, so scenes far larger than memory can be made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window


@dataclass(frozen=True)
class SceneCase:
    """The known field of a synthetic scene.

    Attributes:
        size: side of the (square) scene in pixels.
        offset: global displacement (pixels).
        waves: ``(kx, ky, phase, ax, ay)`` per sinusoid: cycles across the scene along x and y, phase (radians),
            and its weights along x and y (already scaled so that the local field peaks at the requested magnitude).
        seed: the seed the case was drawn with.
    """

    size: int
    offset: tuple[float, float]
    waves: tuple[tuple[float, float, float, float, float], ...]
    seed: int

    @classmethod
    def draw(cls, size: int, offset_px: float = 40.0, amplitude_px: float = 6.0, seed: int = 0,
             n_waves: int = 4) -> SceneCase:
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi)
        offset = (offset_px * math.cos(angle), offset_px * math.sin(angle))
        raw = [(rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.6), rng.uniform(0, 2 * np.pi), rng.normal(), rng.normal())
               for _ in range(n_waves)]
        probe = cls(size, (0.0, 0.0), tuple(raw), seed)
        g = np.linspace(0, size - 1, 96)
        gx, gy = np.meshgrid(g, g)
        vx, vy = probe.local(gx, gy)
        peak = float(np.hypot(vx, vy).max())
        k = amplitude_px / peak if peak > 0 else 0.0
        waves = tuple((kx, ky, ph, ax * k, ay * k) for kx, ky, ph, ax, ay in raw)
        return cls(size, offset, waves, seed)

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vx = np.zeros(np.shape(x))
        vy = np.zeros(np.shape(x))
        for kx, ky, ph, ax, ay in self.waves:
            s = np.sin(2 * np.pi * (kx * x + ky * y) / self.size + ph)
            vx = vx + ax * s
            vy = vy + ay * s
        return vx, vy

    def v(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where SAR pixel ``(x, y)`` looks in the mosaic, minus ``(x, y)``."""
        lx, ly = self.local(x, y)
        return lx + self.offset[0], ly + self.offset[1]

    def truth(self, xy: np.ndarray, iterations: int = 30) -> np.ndarray:
        """The SAR pixel of optical pixels ``(N, 2)``: the solution of ``q + v(q) = p`` (fixed point)."""
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        q = p.copy()
        for _ in range(iterations):
            vx, vy = self.v(q[:, 0], q[:, 1])
            q = p - np.stack([vx, vy], axis=1)
        return q

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SceneCase:
        return cls(int(d["size"]), tuple(d["offset"]), tuple(tuple(w) for w in d["waves"]), int(d["seed"]))


class Mosaic:
    """A scene of tile pairs, each turned/flipped by its position and the seed; regions read on demand."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int, seed: int = 0) -> None:
        self.pairs = pairs  # (optical (C, t, t) uint8, SAR (t, t))
        self.tile = pairs[0][1].shape[0]
        self.size = size
        self.seed = seed
        self.n = math.ceil(size / self.tile)
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _tile(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        if (i, j) not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            k = (i * 7 + j * 3 + self.seed) % len(self.pairs)
            o = (i + 2 * j + self.seed) % 8
            opt, sar = self.pairs[k]
            turn = lambda a: np.rot90(a[..., ::-1] if o >= 4 else a, o % 4, axes=(-2, -1))  # noqa: E731
            self._cache[(i, j)] = (np.ascontiguousarray(turn(opt)), np.ascontiguousarray(turn(sar)))
        return self._cache[(i, j)]

    def region(self, x0: int, y0: int, w: int, h: int, which: int) -> np.ndarray:
        """Pixels ``[y0, y0 + h) x [x0, x0 + w)`` of the optical (``which=0``, ``(C, h, w)``) or SAR (1, ``(h, w)``)
        mosaic; zero outside."""
        c = self.pairs[0][0].shape[0]
        out = np.zeros(((c,) if which == 0 else ()) + (h, w), np.float32)
        t = self.tile
        for i in range(max(0, y0 // t), min(self.n, (y0 + h - 1) // t + 1)):
            for j in range(max(0, x0 // t), min(self.n, (x0 + w - 1) // t + 1)):
                src = self._tile(i, j)[which]
                ya, yb = max(y0, i * t), min(y0 + h, (i + 1) * t, self.size)
                xa, xb = max(x0, j * t), min(x0 + w, (j + 1) * t, self.size)
                if ya < yb and xa < xb:
                    out[..., ya - y0:yb - y0, xa - x0:xb - x0] = src[..., ya - i * t:yb - i * t, xa - j * t:xb - j * t]
        return out


def write_scene_case(pairs: Sequence[tuple[np.ndarray, np.ndarray]], case: SceneCase, out_dir: str | Path,
                     crs: str = "EPSG:32611", pixel_m: float = 10.0, block: int = 1024) -> dict[str, str]:
    """Write ``optical.tif``, ``sar.tif`` (uint8, nodata 0 outside the mosaic) and ``case.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mosaic = Mosaic(pairs, case.size, case.seed)
    n = case.size
    transform = Affine(pixel_m, 0, 500000.0, 0, -pixel_m, 4000000.0)
    common = {"driver": "GTiff", "width": n, "height": n, "dtype": "uint8", "crs": crs, "transform": transform,
              "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "bigtiff": "if_safer"}
    c = pairs[0][0].shape[0]
    with rasterio.open(out / "optical.tif", "w", count=c, **common) as o, \
            rasterio.open(out / "sar.tif", "w", count=1, nodata=0, **common) as s:
        for y0 in range(0, n, block):
            for x0 in range(0, n, block):
                w, h = min(block, n - x0), min(block, n - y0)
                o.write(mosaic.region(x0, y0, w, h, 0).astype(np.uint8), window=Window(x0, y0, w, h))
                qx, qy = np.meshgrid(np.arange(x0, x0 + w, dtype=np.float64), np.arange(y0, y0 + h, dtype=np.float64))
                vx, vy = case.v(qx, qy)
                px, py = qx + vx, qy + vy
                ax, ay = int(np.floor(px.min())) - 2, int(np.floor(py.min())) - 2
                bw, bh = int(np.ceil(px.max())) + 3 - ax, int(np.ceil(py.max())) + 3 - ay
                src = mosaic.region(ax, ay, bw, bh, 1)
                inside = np.zeros((bh, bw), np.float32)
                inside[max(0, -ay):max(0, min(bh, n - ay)), max(0, -ax):max(0, min(bw, n - ax))] = 1
                mx, my = (px - ax).astype(np.float32), (py - ay).astype(np.float32)
                val = cv2.remap(src, mx, my, cv2.INTER_LINEAR)
                ok = cv2.remap(inside, mx, my, cv2.INTER_LINEAR) > 0.999
                s.write(np.where(ok, np.clip(np.round(val), 1, 255), 0).astype(np.uint8)[None],
                        window=Window(x0, y0, w, h))
    (out / "case.json").write_text(json.dumps(case.to_dict(), indent=2), encoding="utf-8")
    return {"optical": str(out / "optical.tif"), "sar": str(out / "sar.tif"), "case": str(out / "case.json")}


def crop_case(case_dir: str | Path, out_dir: str | Path, x0: int, y0: int, size: int) -> dict[str, str]:
    """A window of a written case, as its own case (``case.json`` records the crop's offset)."""
    src, out = Path(case_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("optical.tif", "sar.tif"):
        with rasterio.open(src / name) as ds:
            win = Window(x0, y0, size, size)
            prof = ds.profile | {"width": size, "height": size, "transform": ds.window_transform(win)}
            with rasterio.open(out / name, "w", **prof) as dst:
                dst.write(ds.read(window=win))
    meta = json.loads((src / "case.json").read_text()) | {"crop": [x0, y0]}
    (out / "case.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return {"optical": str(out / "optical.tif"), "sar": str(out / "sar.tif"), "case": str(out / "case.json")}


def field_residuals(field_path: str | Path, case_json: str | Path, n: int = 4000, margin: int = 64,
                    seed: int = 0) -> np.ndarray:
    """Distance (px) between a registration's displacement field and the truth at ``n`` random optical pixels."""
    from osreg.scene.resample import read_field

    meta = json.loads(Path(case_json).read_text())
    case = SceneCase.from_dict(meta)
    cx, cy = meta.get("crop", [0, 0])
    field, grid, _, _ = read_field(field_path)
    rng = np.random.default_rng(seed)
    p = rng.uniform(margin, [grid.width - margin, grid.height - margin], size=(n, 2))
    q = case.truth(p + [cx, cy]) - [cx, cy]
    inside = np.all((q >= 0) & (q <= [grid.width - 1, grid.height - 1]), axis=1)
    return np.linalg.norm(field.map_points(p[inside]) - q[inside], axis=1)


__all__ = ["Mosaic", "SceneCase", "crop_case", "field_residuals", "write_scene_case"]

"""Benchmark datasets, read by their kind of ground truth.

Three kinds: the same pixel grid (identity), a transform matrix, and hand-clicked tie points. Each pair is loaded
lazily (the loaders return rasters only when called) and carries a note on how far its ground truth can be
trusted. The folders and their conventions are described in ``DATA_DIR/README.md`` and each
``PROVENANCE.txt``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osreg.errors import InputError
from osreg.geometry import apply_transform, fit_affine, fit_similarity
from osreg.io.raster import Raster, read_raster


def default_data_dir() -> Path:
    """``$OSREG_DATA`` if set, else ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("OSREG_DATA", "../shared/data"))


def fit_global(xy0: np.ndarray, xy1: np.ndarray, model: str) -> np.ndarray:
    """Least-squares 3x3 transform of ``model`` (similarity, affine, homography) taking ``xy0`` to ``xy1``."""
    if model == "similarity":
        return fit_similarity(xy0, xy1)
    if model == "affine":
        return fit_affine(xy0, xy1)
    if model == "homography":
        import cv2

        H, _ = cv2.findHomography(xy0.astype(np.float64), xy1.astype(np.float64), 0)
        return H
    raise InputError(f"unknown transform model {model!r}: similarity, affine or homography")


@dataclass(frozen=True)
class GroundTruth:
    """Where optical pixels lie in the SAR image.

    Attributes:
        H: 3x3 optical px -> SAR px, for grid and matrix ground truth (None for tie points).
        points0, points1: ``(N, 2)`` tie points (optical, SAR), for tie-point ground truth.
        note: how far the ground truth can be trusted.
    """

    H: np.ndarray | None = None
    points0: np.ndarray | None = None
    points1: np.ndarray | None = None
    note: str = ""

    @property
    def kind(self) -> str:
        return "tiepoints" if self.H is None else "transform"

    def map(self, xy: np.ndarray) -> np.ndarray:
        """SAR positions of optical pixels. Tie-point ground truth interpolates with a thin-plate spline."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if self.H is not None:
            return apply_transform(self.H, xy)
        from scipy.interpolate import RBFInterpolator

        if len(xy) == 0:
            return xy.copy()
        tps = RBFInterpolator(self.points0, self.points1, kernel="thin_plate_spline", smoothing=1.0)
        return tps(xy)

    def eval_points(self, width: int, height: int, n: int = 10) -> np.ndarray:
        """Points where registration error is measured: an n x n grid over the optical image, or the tie points that
        lie in it (a crop keeps every tie point for the interpolation, but a registration is only scored where it
        has pixels)."""
        if self.H is None:
            return self.points0[self.inside(width, height)]
        gx, gy = np.meshgrid(np.linspace(0, width - 1, n), np.linspace(0, height - 1, n))
        return np.stack([gx.ravel(), gy.ravel()], axis=1)

    def inside(self, width: int, height: int) -> np.ndarray:
        """Which tie points' optical positions lie in an optical image of ``width`` x ``height`` px."""
        x, y = self.points0[:, 0], self.points0[:, 1]
        return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)

    def corner_points(self, width: int, height: int) -> np.ndarray:
        """Image corners (transform ground truth) or the tie points in the image (tie-point ground truth)."""
        if self.H is None:
            return self.eval_points(width, height)
        return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)

    def global_fit_error(self, model: str, width: int, height: int) -> float:
        """The registration error (as :func:`osreg.eval.metrics.pair_metrics` measures it) of the least-squares
        global transform of ``model`` (similarity, affine, homography) fitted to the ground truth itself: about the
        best any global transform can score on this pair. About 0 for transform ground truth the model can express;
        for hand-clicked, non-affine tie points it is what no global registration gets below."""
        pts = self.eval_points(width, height)
        true = self.map(pts)
        H = fit_global(pts, true, model)
        return float(np.linalg.norm(apply_transform(H, pts) - true, axis=1).mean())

    def composed(self, before: np.ndarray | None = None, after: np.ndarray | None = None) -> GroundTruth:
        """Ground truth of the pair after the optical is transformed by ``before`` (old px -> new px) and the
        SAR by ``after`` (old px -> new px)."""
        b = np.eye(3) if before is None else before
        a = np.eye(3) if after is None else after
        if self.H is not None:
            return GroundTruth(H=a @ self.H @ np.linalg.inv(b), note=self.note)
        return GroundTruth(points0=apply_transform(b, self.points0), points1=apply_transform(a, self.points1),
                           note=self.note)


@dataclass(frozen=True)
class PairSpec:
    """One benchmark pair: a loader (returns optical and SAR rasters) and its ground truth."""

    dataset: str
    name: str
    load: Callable[[], tuple[Raster, Raster]] = field(compare=False, repr=False)
    gt: GroundTruth = field(compare=False, repr=False)


def _identity(note: str) -> GroundTruth:
    return GroundTruth(H=np.eye(3), note=note)


def _pixel_space(r: Raster) -> Raster:
    return Raster(r.data, r.mask, None, None, r.nodata, r.path, r.descriptions)


def _volkov(root: Path, ground_truth: str = "identity") -> list[PairSpec]:
    """volkov_s1s2_10m. ``ground_truth``: "identity" (the dataset's claim) or "checked": pairs whose four windows
    of the independent check agree (spread <= 1.5 px) get the measured translation SAR = optical + (dx, dy);
    the others keep the identity."""
    d = root / "volkov_s1s2_10m"
    rows = {}
    with open(d / "alignment_check.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["pair"]] = row
    out = []
    for name in sorted(rows):
        r = rows[name]
        o, s = d / "opt" / name, d / "sar" / name
        agree = r["n_strong_quadrants"] == "4" and float(r["quadrant_spread_px"]) <= 1.5
        if ground_truth == "checked" and agree:
            H = np.array([[1, 0, float(r["median_dx_px"])], [0, 1, float(r["median_dy_px"])], [0, 0, 1.0]])
            gt = GroundTruth(H=H, note="translation from the independent alignment check (windows agree, ~1 px)")
        else:
            gt = _identity(f"identity claimed; independent check: {r['flag']} (good to ~3-5 px unless ok_<=1.5px)")
        out.append(PairSpec("volkov_s1s2_10m", name[:-4], lambda o=o, s=s: (read_raster(o, "optical"),
                                                                             read_raster(s, "SAR")), gt))
    return out


def _osmnet(root: Path) -> list[PairSpec]:
    d = root / "osmnet_zhanghan9718" / "ims"
    return [
        PairSpec("osmnet_zhanghan9718", f"pair{i}",
                 lambda i=i: (read_raster(d / f"opt{i}.png", "optical"), read_raster(d / f"sar{i}.png", "SAR")),
                 _identity("same grid (OSdataset); residual 0.5-2.5 px by an independent check"))
        for i in range(1, 5) if (d / f"opt{i}.png").exists()
    ]


def _ossift(root: Path) -> list[PairSpec]:
    d = root / "ossift_xym2009" / "data"
    o = d / "18APR24174447-P2AS-013202438020_01_P001L1-1-L2.tiff"
    s = d / "GF3_KAS_SL_015331_W95.9_N41.3_20190709_L1B_HH_L10004105495-1-L2.tiff"
    if not o.exists():
        return []
    H = np.array([[1, 0, 165.5], [0, 1, 133.0], [0, 0, 1.0]])
    gt = GroundTruth(H=H, note="pair A: translation estimated by the data curators (+-1 px), not independent")
    return [PairSpec("ossift_xym2009", "A", lambda: (_pixel_space(read_raster(o, "optical")),
                                                    _pixel_space(read_raster(s, "SAR"))), gt)]


def _read_tiepoints(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    with open(path, newline="") as f:
        lines = [ln for ln in f.read().splitlines() if ln and ln[0].isdigit()]
    for ln in lines:
        _, lx, ly, rx, ry = ln.split(",")[:5]
        rows.append((float(lx), float(ly), float(rx), float(ry)))
    a = np.array(rows, float)
    return a[:, :2], a[:, 2:]


def _lzk(root: Path) -> list[PairSpec]:
    d = root / "lzk2211_xiangjiang"
    out = []
    for k in (1, 2):
        for lab in sorted((d / f"Label{k}").glob("tile_*_points.csv")):
            tile = lab.name.replace("_points.csv", "")
            if tile == "tile_all":
                continue
            p0, p1 = _read_tiepoints(lab)
            o, s = d / f"OPT{k}" / f"{tile}.png", d / f"SAR{k}" / f"{tile}.png"
            gt = GroundTruth(points0=p0, points1=p1,
                             note="hand-clicked tie points; strongly non-affine (2-14 px affine residual)")
            out.append(PairSpec("lzk2211_xiangjiang", f"{k}_{tile}",
                                lambda o=o, s=s: (read_raster(o, "optical"), read_raster(s, "SAR")), gt))
    return out


def _bigearthnet(root: Path) -> list[PairSpec]:
    d = root / "bigearthnet_example_pypi"
    out = []
    for s1 in sorted((d / "BigEarthNet-S1-Example").glob("S1*")):
        meta = json.loads(next(s1.glob("*_labels_metadata.json")).read_text())
        s2 = d / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]

        def load(s1=s1, s2=s2):
            bands = [read_raster(next(s2.glob(f"*_{b}.tif")), "optical") for b in ("B04", "B03", "B02")]
            opt = Raster(np.concatenate([b.data for b in bands]), np.logical_and.reduce([b.mask for b in bands]),
                         bands[0].crs, bands[0].transform, None, str(s2), ("B04", "B03", "B02"))
            return opt, read_raster(next(s1.glob("*_VV.tif")), "SAR")

        out.append(PairSpec("bigearthnet_example_pypi", s1.name[-5:], load,
                            _identity("same grid by geocoding (S1 GRD terrain-corrected onto the S2 grid)")))
    return out


LOADERS: dict[str, Callable[[Path], list[PairSpec]]] = {
    "volkov_s1s2_10m": _volkov,
    "osmnet_zhanghan9718": _osmnet,
    "ossift_xym2009": _ossift,
    "lzk2211_xiangjiang": _lzk,
    "bigearthnet_example_pypi": _bigearthnet,
}


def load_pairs(data_dir: str | Path, datasets: list[str] | tuple[str, ...], volkov_gt: str = "identity"
               ) -> list[PairSpec]:
    """All pairs of the named datasets (``volkov_gt``: "identity" or "checked", see :func:`_volkov`).

    Raises:
        InputError: a dataset name osreg has no loader for, or a folder that is missing.
    """
    root = Path(data_dir)
    pairs: list[PairSpec] = []
    for name in datasets:
        if name not in LOADERS:
            raise InputError(f"unknown dataset {name!r}; known datasets: {', '.join(LOADERS)}")
        if not (root / name).is_dir():
            raise InputError(f"dataset folder not found: {root / name} (set --data or $OSREG_DATA)")
        if volkov_gt not in ("identity", "checked"):
            raise InputError(f"unknown volkov ground truth {volkov_gt!r}; expected identity or checked")
        pairs.extend(_volkov(root, volkov_gt) if name == "volkov_s1s2_10m" else LOADERS[name](root))
    return pairs

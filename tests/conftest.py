"""Shared fixtures. Tests write only into pytest's tmp_path; data-dependent tests skip without ../shared/data."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
DEMO_OPTICAL = DEMO / "optical_s2_rgb.tif"
DEMO_SAR = DEMO / "sar_s1_vh.tif"
# the simulated geocoding error of the demo SAR (scripts/make_demo.py): content displaced by (+6.3, +3.8) px,
# plus the pair's own residual of about 0.4 px
DEMO_SHIFT = np.array([6.3, 3.8])


def shared_data_dir() -> Path:
    return Path(os.environ.get("OSREG_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """Every test that uses the ``shared_data`` fixture carries the ``shared_data`` marker (``-m "not shared_data"``
    runs what a fresh clone without ../shared/data can run; those tests skip there anyway)."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "README.md").exists():
        pytest.skip(f"shared data not found at {d} (set OSREG_DATA)")
    return d


@pytest.fixture
def one_thread():
    """OpenCV (whose thread count the search stages follow) on one thread for the test, restored after it."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


def write_tif(path: Path, data: np.ndarray, crs=None, transform=None, nodata=None) -> Path:
    """A GeoTIFF of ``data``; without ``crs`` one with no georeference at all (on purpose: rasterio's warning about
    it is silenced)."""
    arr = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "height": arr.shape[1], "width": arr.shape[2], "count": arr.shape[0],
               "dtype": arr.dtype.name}
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
    return path


def textured(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth random texture in [0, 1] with structure at several scales."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for sigma in (2, 5, 12):
        img += cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma) * sigma
    img -= img.min()
    return img / img.max()


UTM33 = "EPSG:32633"
UTM33_T = Affine(10.0, 0, 500000.0, 0, -10.0, 5200000.0)


def demo_rotated_case(angle: float = 115.0, scale: float = 1.3):
    """The committed demo pair (co-registered arrays, ~1 px) with the SAR turned and rescaled."""
    import cv2

    from osreg.eval.deform import canvas_size
    from osreg.io.raster import read_raster
    from osreg.preprocess import PreprocessConfig, prepare_optical, prepare_sar

    opt = prepare_optical(read_raster(DEMO_OPTICAL, "optical"))
    sar = prepare_sar(read_raster(DEMO_SAR, "SAR"), PreprocessConfig(sar_scale="display"))
    n = opt.shape[0]
    c = (n - 1) / 2
    D = np.vstack([cv2.getRotationMatrix2D((c, c), angle, scale), [0, 0, 1]])
    w, h = canvas_size(D, n, n)
    D[:2, 2] += [(w - n) / 2, (h - n) / 2]
    w, h = canvas_size(D, n, n)
    warped = cv2.warpPerspective(sar, D, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones_like(sar, np.uint8), D, (w, h), flags=cv2.INTER_NEAREST) > 0
    return opt, warped, mask, D


def grid_error(H, D):
    from osreg.geometry import apply_transform

    g = np.stack(np.meshgrid(np.linspace(40, 340, 6), np.linspace(40, 340, 6)), -1).reshape(-1, 2)
    return np.linalg.norm(apply_transform(H, g) - apply_transform(D, g), axis=1)


def quarter_turned_demo(matcher):
    """The demo pair with its SAR turned by 270 degrees, matched by ``matcher``: returns the match result and the
    median grid error (px) of a homography fitted to its matches."""
    from osreg.geometry import GeometryConfig, estimate_transform
    from osreg.matchers.search import rotate_with_matrix

    opt, sar, mask, D = demo_rotated_case(0, 1.0)
    s2, m2, R = rotate_with_matrix(sar, mask, 270)
    res = matcher.match(opt, s2.copy(), None, m2.copy())
    est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="homography"))
    return res, float(np.median(grid_error(est.H, R @ D)))


def synthetic_train_pairs(n: int = 3, size: int = 160) -> list:
    """Training pairs of textured images and their contrast-reversed, noisy copies (exact ground truth)."""
    from osreg.train.data import TrainPair

    rng = np.random.default_rng(0)
    pairs = []
    for k in range(n):
        opt = textured((size, size), seed=k)
        sar = np.clip(1 - opt + rng.normal(0, 0.05, opt.shape), 0, 1).astype(np.float32)
        pairs.append(TrainPair(f"s{k}", opt, sar, np.eye(3), True))
    return pairs


def train_tiny(train, run_dir, steps: int, resume: bool = False, **options):
    """A short run of a training entry point (``train_tar.train`` / ``train_promptmid.train``) with the tiny
    preset on :func:`synthetic_train_pairs` (``resume``: continue the run in ``run_dir`` up to ``steps``;
    ``options``: other :class:`TrainConfig` fields).

    Returns the path of the last checkpoint and the run's history."""
    import json

    from osreg.train.common import TrainConfig
    from osreg.train.data import AugmentConfig

    pairs = synthetic_train_pairs()
    settings = {"preset": "tiny", "steps": steps, "batch": 2, "lr": 3e-3, "checkpoint_every": steps,
                "val_every": steps, "augment": AugmentConfig(crop=96, max_rotation=10, max_scale=1.1), **options}
    cfg = TrainConfig(**settings)
    last = train(None, str(run_dir), cfg, resume=resume, threads=1, pairs=(pairs, pairs[:1]))
    return last, json.loads((run_dir / "history.json").read_text())

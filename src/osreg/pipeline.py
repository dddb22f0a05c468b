"""The registration pipeline: read -> georeferenced starting guess -> preprocess -> match -> fit -> verdict.

Matching happens between the optical image and a *working* SAR image: the SAR resampled onto the optical grid
when both are georeferenced, else the SAR as read. Results are reported in original pixel coordinates of both
images.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from osreg.geometry import Estimate, GeometryConfig, apply_transform, estimate_transform
from osreg.io.georef import GridMapping, reproject_sar_to_optical_grid
from osreg.io.raster import Raster, read_raster
from osreg.matchers import Matcher, create_matcher
from osreg.preprocess import (
    PreprocessConfig,
    prepare_optical,
    prepare_sar,
    resolve_sar_scale,
)
from osreg.types import MatchResult
from osreg.verdict import Verdict, VerdictConfig, judge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterConfig:
    """Everything that decides a registration.

    Attributes:
        method: matcher name.
        matcher_options: fields of the matcher's config (as ``(name, value)`` pairs, to stay hashable).
        preprocess, geometry, verdict: the stage configs.
        optical_bands: 1-based optical bands to read (None: all).
        sar_band: 1-based SAR band to read (None: all).
        use_georeference: resample the SAR onto the optical grid when both are georeferenced.
    """

    method: str = "cfog"
    matcher_options: tuple[tuple[str, Any], ...] = ()
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    optical_bands: tuple[int, ...] | None = None
    sar_band: int | None = None
    use_georeference: bool = True


@dataclass
class Registration:
    """The outcome of :func:`run_registration` (whether trusted or not).

    Attributes:
        optical, sar: the inputs as read.
        working_sar: the SAR the matcher saw (on the optical grid when georeferenced).
        mapping: how working-SAR pixels map to original SAR pixels (None in pixel space).
        matches: matches, keypoints1 in *working* SAR pixels.
        estimate: robust fit (optical px -> working SAR px).
        verdict: trust checks.
        timings: seconds per stage.
    """

    config: RegisterConfig
    optical: Raster
    sar: Raster
    working_sar: Raster
    mapping: GridMapping | None
    matches: MatchResult
    estimate: Estimate
    verdict: Verdict
    timings: dict[str, float]
    optical_image: np.ndarray
    sar_image: np.ndarray

    @property
    def georeferenced(self) -> bool:
        return self.mapping is not None

    def keypoints1_in_sar(self) -> np.ndarray:
        """Match positions in original SAR pixel coordinates."""
        if self.mapping is None:
            return self.matches.keypoints1
        return self.mapping.grid_to_sar_pixels(self.matches.keypoints1)

    def transform_to_sar(self) -> tuple[np.ndarray | None, bool]:
        """The optical px -> original SAR px transform, and whether it is exact.

        In pixel space it is the fit itself. With georeferencing in one CRS it is the fit composed exactly with
        the two geotransforms; across CRSs the composition is not a plane transform and is approximated by a
        homography fitted to a 20x20 grid of points.
        """
        H = self.estimate.H
        if H is None or self.mapping is None:
            return H, True
        o, s = self.optical, self.sar
        if o.crs == s.crs:
            half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
            unhalf = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
            to = np.vstack([np.array(o.transform).reshape(3, 3)[:2], [0, 0, 1]])
            ts = np.vstack([np.array(s.transform).reshape(3, 3)[:2], [0, 0, 1]])
            G = unhalf @ np.linalg.inv(ts) @ to @ half
            return G @ H, True
        gx, gy = np.meshgrid(np.linspace(0, o.width - 1, 20), np.linspace(0, o.height - 1, 20))
        p0 = np.stack([gx.ravel(), gy.ravel()], axis=1)
        p1 = self.mapping.grid_to_sar_pixels(apply_transform(H, p0))
        ok = np.all(np.isfinite(p1), axis=1)
        G, _ = cv2.findHomography(p0[ok].astype(np.float32), p1[ok].astype(np.float32), 0)
        return G, False


def _hashable_options(options: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((options or {}).items()))


def make_config(method: str = "cfog", matcher_options: dict[str, Any] | None = None, **kwargs) -> RegisterConfig:
    """Build a :class:`RegisterConfig` with matcher options given as a dict."""
    return RegisterConfig(method=method, matcher_options=_hashable_options(matcher_options), **kwargs)


def run_registration(
    optical_path: str,
    sar_path: str,
    config: RegisterConfig = RegisterConfig(),
    matcher: Matcher | None = None,
) -> Registration:
    """Register a SAR image to an optical image.

    Args:
        optical_path, sar_path: raster files.
        config: what to do.
        matcher: a ready matcher (reused across calls to avoid reloading weights); built from the config if None.

    Raises:
        InputError (and subclasses): unreadable files, no overlap, nodata-only images, images too small,
            unknown method, unusable band counts.
    """
    t0 = time.perf_counter()
    optical = read_raster(optical_path, "optical", config.optical_bands)
    sar = read_raster(sar_path, "SAR", None if config.sar_band is None else [config.sar_band])
    return register_rasters(optical, sar, config, matcher, t_read=time.perf_counter() - t0)


def register_rasters(
    optical: Raster,
    sar: Raster,
    config: RegisterConfig = RegisterConfig(),
    matcher: Matcher | None = None,
    t_read: float = 0.0,
) -> Registration:
    """:func:`run_registration` on rasters already in memory."""
    timings = {"read_s": t_read}
    if matcher is None:
        matcher = create_matcher(config.method, **dict(config.matcher_options))
    mapping = None
    working = sar
    t = time.perf_counter()
    if config.use_georeference and optical.is_georeferenced and sar.is_georeferenced:
        mapping = reproject_sar_to_optical_grid(optical, sar)
        working = mapping.sar_on_grid
        logger.info("both inputs georeferenced: SAR resampled onto the optical grid as the starting guess")
    elif optical.is_georeferenced != sar.is_georeferenced:
        logger.warning("only one input is georeferenced: registering in pixel space")
    timings["georef_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pre = dataclasses.replace(config.preprocess, sar_scale=resolve_sar_scale(sar, config.preprocess))
    img0 = prepare_optical(optical, pre, matcher.name)
    img1 = prepare_sar(working, pre, matcher.name)
    timings["preprocess_s"] = time.perf_counter() - t
    t = time.perf_counter()
    matches = matcher.match(img0, img1, optical.mask, working.mask)
    timings["match_s"] = time.perf_counter() - t
    t = time.perf_counter()
    est = estimate_transform(matches.keypoints0, matches.keypoints1, config.geometry)
    timings["estimate_s"] = time.perf_counter() - t
    verdict = judge(est, matches.keypoints0, optical.mask, config.verdict, images=(img0, img1, working.mask))
    logger.info(
        "%s: %d matches, %d inliers, verdict %s%s", matcher.name, len(matches), est.n_inliers, verdict.label,
        "" if verdict.good else " (" + "; ".join(verdict.reasons) + ")",
    )
    return Registration(config, optical, sar, working, mapping, matches, est, verdict, timings, img0, img1)


def residual_misregistration(reg: Registration) -> dict[str, float] | None:
    """How far the georeferenced starting guess was off: displacement of the fit over the image.

    Returns mean and max displacement in pixels and metres (None in pixel space or without a fit).
    """
    if reg.mapping is None or reg.estimate.H is None:
        return None
    o = reg.optical
    gx, gy = np.meshgrid(np.linspace(0, o.width - 1, 16), np.linspace(0, o.height - 1, 16))
    p = np.stack([gx.ravel(), gy.ravel()], axis=1)
    q = apply_transform(reg.estimate.H, p)
    d_px = np.linalg.norm(q - p, axis=1)
    m0, m1 = o.pixel_to_map(p), o.pixel_to_map(q)
    if o.crs.is_geographic:
        lat = np.radians(m0[:, 1])
        dx = (m1[:, 0] - m0[:, 0]) * 111320.0 * np.cos(lat)
        dy = (m1[:, 1] - m0[:, 1]) * 110540.0
        d_m = np.hypot(dx, dy)
    else:
        d_m = np.linalg.norm(m1 - m0, axis=1) * float(o.crs.linear_units_factor[1] if o.crs.linear_units_factor else 1)
    shift = q.mean(0) - p.mean(0)
    return {
        "mean_px": float(d_px.mean()),
        "max_px": float(d_px.max()),
        "mean_m": float(d_m.mean()),
        "max_m": float(d_m.max()),
        "shift_x_px": float(shift[0]),
        "shift_y_px": float(shift[1]),
    }


__all__ = [
    "RegisterConfig",
    "Registration",
    "make_config",
    "register_rasters",
    "residual_misregistration",
    "run_registration",
]

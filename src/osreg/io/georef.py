"""Georeferenced starting guess: overlap checks and reprojection of the SAR onto the optical grid."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.warp import transform as warp_transform

from osreg.errors import NoOverlapError
from osreg.io.raster import Raster

logger = logging.getLogger(__name__)


def _bounds(r: Raster) -> tuple[float, float, float, float]:
    t = r.transform
    xs = [t.c, t.c + t.a * r.width + t.b * r.height, t.c + t.a * r.width, t.c + t.b * r.height]
    ys = [t.f, t.f + t.d * r.width + t.e * r.height, t.f + t.d * r.width, t.f + t.e * r.height]
    return min(xs), min(ys), max(xs), max(ys)


def overlap_fraction(optical: Raster, sar: Raster) -> float:
    """Fraction of the optical footprint covered by the SAR footprint (bounding boxes, in the optical CRS).

    Raises:
        NoOverlapError: when the footprints do not intersect.
    """
    ob = _bounds(optical)
    sb = transform_bounds(sar.crs, optical.crs, *_bounds(sar), densify_pts=21)
    ix = min(ob[2], sb[2]) - max(ob[0], sb[0])
    iy = min(ob[3], sb[3]) - max(ob[1], sb[1])
    if ix <= 0 or iy <= 0:
        raise NoOverlapError(
            "optical and SAR images do not overlap: optical covers "
            f"({ob[0]:.1f}, {ob[1]:.1f}, {ob[2]:.1f}, {ob[3]:.1f}) and SAR covers "
            f"({sb[0]:.1f}, {sb[1]:.1f}, {sb[2]:.1f}, {sb[3]:.1f}) in {optical.crs}"
        )
    return float(ix * iy / ((ob[2] - ob[0]) * (ob[3] - ob[1])))


@dataclass(frozen=True)
class GridMapping:
    """The SAR resampled onto the optical grid, and how to go back to original SAR pixels."""

    sar_on_grid: Raster
    sar: Raster
    optical: Raster

    def grid_to_sar_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Original SAR pixel coordinates of optical-grid pixel coordinates ``(N, 2)``."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if len(xy) == 0:
            return xy.copy()
        m = self.optical.pixel_to_map(xy)
        if self.sar.crs != self.optical.crs:
            xs, ys = warp_transform(self.optical.crs, self.sar.crs, m[:, 0].tolist(), m[:, 1].tolist())
            m = np.stack([xs, ys], axis=1)
        return self.sar.map_to_pixel(m)


WGS84_A = 6378137.0  # semi-major axis (m)
WGS84_F = 1 / 298.257223563  # flattening


def ground_distance_m(crs, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Ground distance in metres between map points ``p0`` and ``p1`` ``(N, 2)`` of a CRS.

    Both points go to WGS84 longitude/latitude; the distance is measured on the ellipsoid with its local radii of
    curvature at their mean latitude (exact to well under 0.1 % for the distances of a misregistration, up to tens
    of kilometres). Unlike a distance in CRS units it does not depend on the projection's scale factor (World
    Mercator at 30 degrees north stretches distances by 15 %).
    """
    p0 = np.asarray(p0, dtype=np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1, 2)
    if len(p0) == 0:
        return np.zeros(0)
    xs = np.r_[p0[:, 0], p1[:, 0]].tolist()
    ys = np.r_[p0[:, 1], p1[:, 1]].tolist()
    lon, lat = (np.asarray(v) for v in warp_transform(crs, "EPSG:4326", xs, ys))
    n = len(p0)
    phi = np.radians(0.5 * (lat[:n] + lat[n:]))
    e2 = WGS84_F * (2 - WGS84_F)
    w = np.sqrt(1 - e2 * np.sin(phi) ** 2)
    meridian = WGS84_A * (1 - e2) / w**3  # radius of curvature along the meridian
    normal = WGS84_A / w  # radius of curvature along the prime vertical
    dlon = (lon[n:] - lon[:n] + 180.0) % 360.0 - 180.0
    north = np.radians(lat[n:] - lat[:n]) * meridian
    east = np.radians(dlon) * normal * np.cos(phi)
    return np.hypot(north, east)


def pixel_ground_size_m(crs, transform, width: int, height: int) -> np.ndarray:
    """Ground size in metres ``(2,)`` of a pixel at the centre of a ``width`` x ``height`` raster, along its columns
    and rows (measured on the ellipsoid, see :func:`ground_distance_m`)."""
    t = transform
    c = np.array([[width / 2, height / 2]] * 2)  # the centre pixel's corner: map = transform of (col, row)
    d = c + np.array([[1.0, 0.0], [0.0, 1.0]])

    def to_map(q: np.ndarray) -> np.ndarray:
        return np.stack([t.a * q[:, 0] + t.b * q[:, 1] + t.c, t.d * q[:, 0] + t.e * q[:, 1] + t.f], axis=1)

    return ground_distance_m(crs, to_map(c), to_map(d))


def reproject_sar_to_optical_grid(optical: Raster, sar: Raster) -> GridMapping:
    """Resample every SAR band onto the optical pixel grid (bilinear); invalid pixels become NaN and masked.

    Raises:
        NoOverlapError: when the footprints do not intersect, or no valid SAR pixel lands on the grid.
    """
    frac = overlap_fraction(optical, sar)
    logger.info("SAR footprint covers %.0f%% of the optical footprint", 100 * frac)
    src = sar.data.astype(np.float32)
    src = np.where(sar.mask[None], src, np.nan)
    dst = np.full((sar.count, optical.height, optical.width), np.nan, dtype=np.float32)
    for b in range(sar.count):
        reproject(
            source=src[b],
            destination=dst[b],
            src_transform=sar.transform,
            src_crs=sar.crs,
            src_nodata=np.nan,
            dst_transform=optical.transform,
            dst_crs=optical.crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    mask = np.isfinite(dst).all(axis=0)
    if not mask.any():
        raise NoOverlapError(
            f"optical and SAR images do not overlap: no valid SAR pixel of {sar.path} falls on the optical grid "
            f"of {optical.path}"
        )
    on_grid = Raster(
        data=dst,
        mask=mask,
        crs=optical.crs,
        transform=optical.transform,
        nodata=float("nan"),
        path=sar.path,
        descriptions=sar.descriptions,
    )
    return GridMapping(sar_on_grid=on_grid, sar=sar, optical=optical)

"""Reading and writing rasters (GeoTIFF, PNG, JPEG) with their masks and georeferencing."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from osreg.errors import InputError, NodataError, RasterReadError
from osreg.io.atomic import atomic_output

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class Raster:
    """Pixels with their validity mask and georeferencing.

    Attributes:
        data: ``(bands, H, W)`` array in the file's dtype.
        mask: ``(H, W)`` bool, True where every selected band is valid (not nodata, not NaN, not transparent).
        crs: the coordinate reference system, or None when not georeferenced.
        transform: the affine geotransform (pixel corner -> map), or None when not georeferenced.
        nodata: the nodata value declared in the file, if any.
        path: where it was read from ("" for in-memory rasters).
        descriptions: one name per band (may be empty strings).
    """

    data: np.ndarray
    mask: np.ndarray
    crs: CRS | None = None
    transform: Affine | None = None
    nodata: float | None = None
    path: str = ""
    descriptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    @property
    def dtype(self) -> str:
        return str(self.data.dtype)

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None

    @property
    def pixel_size(self) -> float | None:
        """Mean ground pixel size in CRS units (metres for projected CRSs), or None."""
        if self.transform is None:
            return None
        return float(np.sqrt(abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)))

    def pixel_to_map(self, xy: np.ndarray) -> np.ndarray:
        """Map coordinates of pixel coordinates ``(N, 2)`` (pixel centres at integers)."""
        if self.transform is None:
            raise InputError(f"{self.path or 'raster'} is not georeferenced: no CRS or geotransform")
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        t = self.transform
        c, r = xy[:, 0] + 0.5, xy[:, 1] + 0.5
        return np.stack([t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f], axis=1)

    def map_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates (centres at integers) of map coordinates ``(N, 2)``."""
        if self.transform is None:
            raise InputError(f"{self.path or 'raster'} is not georeferenced: no CRS or geotransform")
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        inv = ~self.transform
        c = inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c
        r = inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f
        return np.stack([c - 0.5, r - 0.5], axis=1)


def _is_georeferenced(ds: rasterio.io.DatasetReader) -> bool:
    return ds.crs is not None and ds.transform != Affine.identity()


def read_raster(path: str | os.PathLike, role: str = "image", bands: Sequence[int] | None = None) -> Raster:
    """Read a raster with its mask and georeferencing.

    Args:
        path: GeoTIFF, PNG or JPEG file (anything GDAL reads).
        role: what the image is ("optical", "SAR"), used in error messages.
        bands: 1-based band indices to read; all bands when None. A PNG/JPEG alpha band is used as a mask
            and not returned as data.

    Raises:
        RasterReadError: the file is missing or unreadable.
        InputError: a band index is out of range or the data type is not supported.
        NodataError: no pixel is valid.
    """
    p = Path(path)
    with open_dataset(p, role) as ds:
        return _read_open_dataset(ds, p, role, bands)


@contextlib.contextmanager
def open_dataset(path: str | os.PathLike, role: str) -> Iterator[rasterio.DatasetReader]:
    """Open a raster for reading with osreg's errors (missing file, folder, unreadable format) and without GDAL's
    not-georeferenced warning.

    Raises:
        RasterReadError: the file is missing or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise RasterReadError(f"{role} image not found: {p}")
    if p.is_dir():
        raise RasterReadError(f"{role} image path is a folder, expected a raster file: {p}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(p) as ds:
                yield ds
        except RasterioIOError as exc:  # opening or reading
            raise RasterReadError(f"cannot read {role} image {p} as a raster (GeoTIFF, PNG or JPEG): {exc}") from exc


def alpha_bands(ds) -> list[int]:
    """1-based indices of the alpha (transparency) bands of an open dataset."""
    from rasterio.enums import ColorInterp

    return [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]


def valid_mask(data: np.ndarray, nodata: float | None, alphas: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``(H, W)`` True where every band of ``(bands, H, W)`` data is valid: not the nodata value (a pixel is nodata
    when all its bands equal it), finite, and not transparent in any alpha band."""
    valid = np.ones(data.shape[1:], dtype=bool)
    if nodata is not None:
        if np.isnan(nodata):
            valid &= ~np.isnan(data).any(axis=0)
        else:
            valid &= ~(data == np.asarray(nodata, dtype=data.dtype)).all(axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    for a in alphas:
        valid &= a > 0
    return valid


def select_bands(ds, p: Path, role: str, bands: Sequence[int] | None) -> tuple[list[int], list[int], str]:
    """The data bands to read (all but the alpha bands when ``bands`` is None), the alpha bands, and their dtype.

    Raises:
        InputError: a band index out of range, or a data type osreg does not support.
    """
    alpha_idx = alpha_bands(ds)
    data_bands = [b for b in range(1, ds.count + 1) if b not in alpha_idx]
    if bands:
        bad = [b for b in bands if b < 1 or b > ds.count]
        if bad:
            raise InputError(
                f"{role} image {p} has {ds.count} band(s); band index {bad[0]} does not exist (bands are 1-based)"
            )
        data_bands = list(bands)
    dtype = ds.dtypes[data_bands[0] - 1]
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(f"{role} image {p} has data type {dtype}; supported: {', '.join(SUPPORTED_DTYPES)}")
    return data_bands, alpha_idx, dtype


def _read_open_dataset(ds, p: Path, role: str, bands: Sequence[int] | None) -> Raster:
    data_bands, alpha_idx, dtype = select_bands(ds, p, role, bands)
    data = ds.read(data_bands)
    nodata = ds.nodata
    valid = valid_mask(data, nodata, [ds.read(a) for a in alpha_idx])
    georef = _is_georeferenced(ds)
    if not valid.any():
        raise NodataError(f"{role} image {p} contains only nodata values (nodata={nodata}); nothing to register")
    descriptions = tuple(d or "" for d in (ds.descriptions[b - 1] for b in data_bands))
    logger.debug("read %s: %s bands %s %s georef=%s", p, len(data_bands), data.shape[1:], dtype, georef)
    return Raster(
        data=data,
        mask=valid,
        crs=ds.crs if georef else None,
        transform=ds.transform if georef else None,
        nodata=nodata,
        path=str(p),
        descriptions=descriptions,
    )


def write_geotiff(
    path: str | os.PathLike,
    data: np.ndarray,
    crs: CRS | None = None,
    transform: Affine | None = None,
    nodata: float | None = None,
    overwrite: bool = False,
    descriptions: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a tiled, compressed GeoTIFF atomically.

    Args:
        path: output file.
        data: ``(H, W)`` or ``(bands, H, W)`` array.
        crs, transform: georeferencing; both None for a pixel-space image.
        nodata: nodata value to record.
        overwrite: replace an existing file.
        descriptions: one name per band.
        tags: dataset metadata tags (GDAL metadata of the default domain).

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is false.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    count, h, w = arr.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": count,
        "dtype": arr.dtype.name,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if h < 256 or w < 256:  # GDAL needs tiles no larger than a multiple of 16 covering the image
        profile["blockxsize"] = profile["blockysize"] = 16 * max(1, min(h, w) // 16) if min(h, w) >= 16 else 16
        if min(h, w) < 16:
            profile.pop("tiled"), profile.pop("blockxsize"), profile.pop("blockysize")
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    final = Path(path)
    with atomic_output(final, overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)
            if tags:
                dst.update_tags(**tags)
    return final

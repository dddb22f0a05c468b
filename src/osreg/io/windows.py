"""Windowed and decimated reads of rasters too large to hold in memory.

A :class:`RasterSource` describes a raster file (size, bands, CRS, geotransform, nodata) without reading pixels;
:meth:`RasterSource.read` returns any window, optionally decimated (GDAL uses the file's overviews when it has
them), as an in-memory :class:`~osreg.io.raster.Raster` whose geotransform is that of the window. The file is opened
for each read, so a source is small, picklable and safe to send to another process.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from osreg.io.raster import Raster, _is_georeferenced, open_dataset, select_bands, valid_mask


@dataclass(frozen=True)
class RasterSource:
    """A raster file and the bands osreg reads from it.

    Attributes:
        path: the file.
        role: "optical" or "SAR" (for messages).
        bands: 1-based data bands read.
        alphas: 1-based alpha bands (transparency masks).
        width, height: full-resolution size in pixels.
        dtype: data type of the bands.
        crs, transform: georeferencing (None when not georeferenced).
        nodata: declared nodata value.
        descriptions: one name per band read.
    """

    path: str
    role: str
    bands: tuple[int, ...]
    alphas: tuple[int, ...]
    width: int
    height: int
    dtype: str
    crs: CRS | None
    transform: Affine | None
    nodata: float | None
    descriptions: tuple[str, ...]

    @classmethod
    def open(cls, path: str | os.PathLike, role: str, bands: Sequence[int] | None = None) -> RasterSource:
        """Describe a raster file (no pixels are read).

        Raises:
            RasterReadError: missing or unreadable file.
            InputError: band index out of range, unsupported data type.
        """
        p = Path(path)
        with open_dataset(p, role) as ds:
            data_bands, alphas, dtype = select_bands(ds, p, role, bands)
            georef = _is_georeferenced(ds)
            return cls(str(p), role, tuple(data_bands), tuple(alphas), ds.width, ds.height, dtype,
                       ds.crs if georef else None, ds.transform if georef else None, ds.nodata,
                       tuple(ds.descriptions[b - 1] or "" for b in data_bands))

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None

    @property
    def count(self) -> int:
        return len(self.bands)

    def decimation(self, max_side: int) -> int:
        """The integer factor that brings the longest side to at most ``max_side``."""
        return max(1, math.ceil(max(self.width, self.height) / max_side))

    def read(self, window: tuple[int, int, int, int] | None = None, factor: int = 1,
             resampling: Resampling = Resampling.average) -> Raster:
        """Pixels of a window ``(col0, row0, width, height)`` (the whole raster when None), decimated by ``factor``.

        Parts of the window outside the raster are returned as invalid pixels (mask False). The returned raster's
        geotransform is that of the window at the read resolution (None when not georeferenced). Decimation
        averages data and keeps a pixel valid only where most of its block was valid.
        """
        c0, r0, w, h = window if window is not None else (0, 0, self.width, self.height)
        inside_raster = c0 >= 0 and r0 >= 0 and c0 + w <= self.width and r0 + h <= self.height
        if not inside_raster:
            if factor != 1:
                raise ValueError("a decimated read needs a window inside the raster")
            return self._read_padded(c0, r0, w, h)
        out_h, out_w = max(1, math.ceil(h / factor)), max(1, math.ceil(w / factor))
        win = Window(c0, r0, w, h)
        shape = (out_h, out_w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(self.path) as ds:
                data = ds.read(list(self.bands), window=win, out_shape=(len(self.bands), *shape),
                               resampling=resampling)
                alphas = [ds.read(a, window=win, out_shape=shape, resampling=Resampling.nearest)
                          for a in self.alphas]
                if factor > 1 and self.nodata is not None:
                    # the validity of a decimated pixel: the share of valid full-resolution pixels under it
                    msk = ds.read_masks(self.bands[0], window=win, out_shape=shape, resampling=Resampling.average)
                    alphas.append((msk >= 128).astype(np.uint8))
        valid = valid_mask(data, self.nodata, alphas)
        transform = None
        if self.transform is not None:
            transform = self.transform @ Affine.translation(c0, r0) @ Affine.scale(w / out_w, h / out_h)
        return Raster(data=data, mask=valid, crs=self.crs, transform=transform, nodata=self.nodata, path=self.path,
                      descriptions=self.descriptions)



    def _read_padded(self, c0: int, r0: int, w: int, h: int) -> Raster:
        """A full-resolution window reaching beyond the raster: the part inside, padded with invalid pixels."""
        x0, y0 = max(c0, 0), max(r0, 0)
        x1, y1 = min(c0 + w, self.width), min(r0 + h, self.height)
        data = np.zeros((len(self.bands), h, w), self.dtype)
        valid = np.zeros((h, w), bool)
        if x1 > x0 and y1 > y0:
            part = self.read((x0, y0, x1 - x0, y1 - y0))
            data[:, y0 - r0:y1 - r0, x0 - c0:x1 - c0] = part.data
            valid[y0 - r0:y1 - r0, x0 - c0:x1 - c0] = part.mask
        transform = None if self.transform is None else self.transform @ Affine.translation(c0, r0)
        return Raster(data=data, mask=valid, crs=self.crs, transform=transform, nodata=self.nodata, path=self.path,
                      descriptions=self.descriptions)


__all__ = ["RasterSource"]

"""Writing and applying a registration block by block: the registered SAR as a Cloud-Optimised GeoTIFF, the
displacement field as a GeoTIFF, and ``osreg apply`` (the same resampling for any product of the same SAR).

Memory stays bounded by the block size whatever the scene size: each block of the optical grid reads only the SAR
window it needs. The block GeoTIFF is converted to a COG (tiles, overviews, deflate) by GDAL.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from osreg import __version__
from osreg.errors import InputError
from osreg.io.atomic import atomic_output
from osreg.io.windows import RasterSource
from osreg.progress import ProgressFactory, silent
from osreg.scene.config import SceneConfig, gdal_env
from osreg.scene.field import DisplacementField, WorkingFrame
from osreg.scene.sample import CoarseMask, sample_sar

logger = logging.getLogger(__name__)

FIELD_VERSION = "1"


@dataclass(frozen=True)
class Grid:
    """The optical pixel grid outputs are written on."""

    width: int
    height: int
    crs: CRS | None = None
    transform: Affine | None = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None


def _cog_copy(src: Path, dst: Path, threads: int = 1) -> None:
    """Convert a tiled GeoTIFF to a Cloud-Optimised GeoTIFF (512 px tiles, deflate, average overviews)."""
    from rasterio.shutil import copy as rio_copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rio_copy(str(src), str(dst), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=512,
                 OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER", NUM_THREADS=str(threads))


def resample_to_cog(field: DisplacementField, frame: WorkingFrame, sar: RasterSource, grid: Grid,
                    out_path: str | os.PathLike, tags: dict[str, str], overwrite: bool = False, block: int = 1024,
                    border: CoarseMask | None = None, progress: ProgressFactory = silent) -> Path:
    """Sample ``sar`` at the registered position of every pixel of ``grid``, block by block, into a COG.

    The output is float32 with NaN as nodata (outside the SAR or its valid pixels), one band per SAR band.
    """

    def block_of(c0: int, r0: int, w: int, h: int) -> np.ndarray:
        wx, wy = field.positions(c0, r0, w, h)
        return sample_sar(sar, frame, wx, wy, border)[0]

    names = [d or f"SAR band {i}" for i, d in enumerate(sar.descriptions, start=1)]
    return _write_blocks_cog(out_path, grid.width, grid.height, grid.crs if grid.georeferenced else None,
                             grid.transform if grid.georeferenced else None, names, tags, block_of, overwrite, block,
                             progress("resampling", _n_blocks(grid.width, grid.height, block)))


def _n_blocks(width: int, height: int, block: int) -> int:
    return math.ceil(width / block) * math.ceil(height / block)


def _write_blocks_cog(out_path: str | os.PathLike, width: int, height: int, crs, transform, names: list[str],
                      tags: dict[str, str], block_of: Callable[[int, int, int, int], np.ndarray], overwrite: bool,
                      block: int, bar) -> Path:
    """A float32 Cloud-Optimised GeoTIFF (NaN nodata, one band per name) whose ``block`` x ``block`` windows
    ``(col0, row0, width, height)`` come from ``block_of``: written block by block into a tiled GeoTIFF beside the
    staged output, then copied into a COG; the output appears whole or not at all."""
    profile = {"driver": "GTiff", "width": width, "height": height, "count": len(names),
               "dtype": "float32", "nodata": float("nan"), "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate", "zlevel": 1, "bigtiff": "if_safer"}
    if crs is not None and transform is not None:
        profile.update(crs=crs, transform=transform)
    final = Path(out_path)
    with atomic_output(final, overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        blocks = tmp.with_name(tmp.name + ".blocks.tif")
        try:
            with rasterio.open(blocks, "w", **profile) as dst:
                for r0 in range(0, height, block):
                    for c0 in range(0, width, block):
                        w, h = min(block, width - c0), min(block, height - r0)
                        dst.write(block_of(c0, r0, w, h), window=Window(c0, r0, w, h))
                        bar.update(1)
                for i, n in enumerate(names, start=1):
                    dst.set_band_description(i, n)
                dst.update_tags(**tags)
            _cog_copy(blocks, tmp)
        finally:
            bar.close()
            if blocks.exists():
                blocks.unlink()
    return final


def write_fused(optical: RasterSource, registered: str | os.PathLike, out_path: str | os.PathLike,
                tags: dict[str, str], overwrite: bool = False, block: int = 1024,
                progress: ProgressFactory = silent) -> Path:
    """The optical bands and the registered SAR bands as one float32 Cloud-Optimised GeoTIFF on the optical grid
    (the stack a detector or a classifier takes), written block by block; NaN where a band is invalid."""
    sar = RasterSource.open(registered, "registered SAR")
    if (sar.width, sar.height) != (optical.width, optical.height):
        raise InputError(f"the registered SAR {registered} is not on the optical grid of {optical.path}")
    names = [d or f"optical band {b}" for d, b in zip(optical.descriptions, optical.bands)]
    names += [d or f"SAR band {i}" for i, d in enumerate(sar.descriptions, start=1)]

    def block_of(c0: int, r0: int, w: int, h: int) -> np.ndarray:
        o, r = optical.read((c0, r0, w, h)), sar.read((c0, r0, w, h))
        od = np.where(o.mask[None], o.data.astype(np.float32), np.nan)
        rd = np.where(r.mask[None], r.data.astype(np.float32), np.nan)
        return np.concatenate([od, rd])

    return _write_blocks_cog(out_path, optical.width, optical.height, optical.crs, optical.transform, names, tags,
                             block_of, overwrite, block,
                             progress("fusing", _n_blocks(optical.width, optical.height, block)))


def _metres(grid: Grid, field: DisplacementField) -> tuple[np.ndarray, np.ndarray] | None:
    """The field in metres along easting and northing (None without georeference)."""
    if not grid.georeferenced:
        return None
    t = grid.transform
    ex = t.a * field.dx + t.b * field.dy  # CRS units along x
    ny = t.d * field.dx + t.e * field.dy  # CRS units along y (north for north-up grids)
    if grid.crs.is_geographic:
        gx, gy = DisplacementField.lattice(field.width, field.height, field.step)
        lat = np.radians(t.d * (gx + 0.5) + t.e * (gy + 0.5) + t.f)
        ex, ny = ex * 111320.0 * np.cos(lat), ny * 110574.0
    else:
        unit = grid.crs.linear_units_factor[1] if grid.crs.linear_units_factor else 1.0
        ex, ny = ex * unit, ny * unit
    return ex.astype(np.float32), ny.astype(np.float32)


def write_field(path: str | os.PathLike, field: DisplacementField, frame: WorkingFrame, grid: Grid,
                sar_size: tuple[int, int], tags: dict[str, str], overwrite: bool = False) -> Path:
    """The displacement field as a GeoTIFF on a coarse version of the optical grid (one pixel per lattice node).

    Bands: ``dx_px``, ``dy_px`` (working-frame position minus optical pixel: the georeference's error in optical
    pixels when georeferenced, the SAR pixel offset in pixel space), and with a georeference ``dx_east_m``,
    ``dy_north_m``. Tags record what :func:`read_field` needs to apply it again.
    """
    step = field.step
    bands = [field.dx, field.dy]
    names = ["dx_px", "dy_px"]
    metres = _metres(grid, field)
    if metres is not None:
        bands += list(metres)
        names += ["dx_east_m", "dy_north_m"]
    profile = {"driver": "GTiff", "width": field.dx.shape[1], "height": field.dx.shape[0], "count": len(bands),
               "dtype": "float32", "compress": "deflate"}
    if grid.georeferenced:
        # lattice node k is optical pixel k * step: its centre is at grid pixel k * step + 0.5
        profile.update(crs=grid.crs, transform=grid.transform @ Affine.translation(0.5 - 0.5 * step, 0.5 - 0.5 * step)
                       @ Affine.scale(step))
    meta = {"OSREG_FIELD": FIELD_VERSION, "OSREG_VERSION": __version__,
            "OSREG_FRAME": "georeferenced" if frame.georeferenced else "pixel",
            "OSREG_FIELD_STEP": str(step), "OSREG_GRID_WIDTH": str(grid.width), "OSREG_GRID_HEIGHT": str(grid.height),
            "OSREG_SAR_WIDTH": str(sar_size[0]), "OSREG_SAR_HEIGHT": str(sar_size[1]), **tags}
    if grid.georeferenced:
        meta["OSREG_GRID_TRANSFORM"] = ",".join(repr(v) for v in tuple(grid.transform)[:6])
    final = Path(path)
    with atomic_output(final, overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.stack(bands))
            for i, n in enumerate(names, start=1):
                dst.set_band_description(i, n)
            dst.update_tags(**meta)
    return final


def read_field(path: str | os.PathLike) -> tuple[DisplacementField, Grid, str, tuple[int, int]]:
    """A field written by :func:`write_field`: the field, the optical grid, the frame ("georeferenced" or
    "pixel"), and the registered SAR's size.

    Raises:
        InputError: the file is not an osreg displacement field.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"displacement field not found: {p}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(p) as ds:
                tags = ds.tags()
                if "OSREG_FIELD" not in tags:
                    raise InputError(f"{p} is not an osreg displacement field (no OSREG_FIELD tag)")
                dx, dy = ds.read(1), ds.read(2)
                crs = ds.crs
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot read the displacement field {p}: {exc}") from exc
    width, height = int(tags["OSREG_GRID_WIDTH"]), int(tags["OSREG_GRID_HEIGHT"])
    transform = None
    if "OSREG_GRID_TRANSFORM" in tags:
        transform = Affine(*(float(v) for v in tags["OSREG_GRID_TRANSFORM"].split(",")))
    grid = Grid(width, height, crs if transform is not None else None, transform)
    field = DisplacementField(dx.astype(np.float32), dy.astype(np.float32), int(tags["OSREG_FIELD_STEP"]), width,
                              height)
    return field, grid, tags["OSREG_FRAME"], (int(tags["OSREG_SAR_WIDTH"]), int(tags["OSREG_SAR_HEIGHT"]))


def field_of(field_or_report: str | os.PathLike) -> Path:
    """The displacement field a path names: the field itself, or the one a ``report.json`` lists (looked up
    beside the report when the folder was moved).

    Raises:
        InputError: a report without a field (an untrusted registration writes none).
    """
    p = Path(field_or_report)
    if p.suffix.lower() != ".json":
        return p
    import json

    if not p.is_file():
        raise InputError(f"report not found: {p}")
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the report {p}: {exc}") from exc
    listed = (report.get("outputs") or {}).get("displacement_field")
    if not listed:
        raise InputError(f"the report {p} lists no displacement field: its registration was not trusted "
                         f"(verdict {report.get('verdict')!r}), so there is nothing to apply")
    beside = p.parent / Path(listed).name
    return beside if beside.exists() else Path(listed)


def apply_registration(field_or_report: str | os.PathLike, input_path: str | os.PathLike,
                       out_path: str | os.PathLike, overwrite: bool = False, bands=None, block: int = 1024,
                       progress: ProgressFactory = silent) -> Path:
    """Resample another band or product of the registered SAR onto the optical grid with a finished registration.

    In pixel space ``input_path`` must have the registered SAR's pixel grid (its size is checked); with a
    georeference it must be georeferenced, and may have another grid or CRS (its georeference is used).

    Raises:
        InputError: not a field, a report without one, an input that does not fit the registration.
    """
    field, grid, frame_kind, sar_size = read_field(field_of(field_or_report))
    src = RasterSource.open(input_path, "input", bands)
    if frame_kind == "georeferenced":
        if not src.is_georeferenced:
            raise InputError(f"{input_path} has no CRS or geotransform, but the registration was made on "
                             "georeferenced images: the input must be georeferenced like the SAR")
        frame = WorkingFrame(True, grid.crs, grid.transform, src.crs, src.transform)
    else:
        if (src.width, src.height) != sar_size:
            raise InputError(f"{input_path} is {src.width}x{src.height} pixels but the registered SAR was "
                             f"{sar_size[0]}x{sar_size[1]}: in pixel space the input must be on the SAR's pixel grid")
        frame = WorkingFrame.pixel_space()
    tags = {"OSREG_VERSION": __version__, "OSREG_APPLIED_FIELD": str(Path(field_of(field_or_report)).name)}
    with gdal_env(SceneConfig()):
        return resample_to_cog(field, frame, src, grid, out_path, tags, overwrite, block, progress=progress)


__all__ = ["Grid", "apply_registration", "field_of", "read_field", "resample_to_cog", "write_field", "write_fused"]

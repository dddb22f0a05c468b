"""Raster input/output: reading, georeferencing and atomic writing."""

from osreg.io.atomic import atomic_output, check_can_write
from osreg.io.raster import Raster, read_raster, write_geotiff

__all__ = ["Raster", "atomic_output", "check_can_write", "read_raster", "write_geotiff"]

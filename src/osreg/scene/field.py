"""Where every optical pixel lies in the SAR: the working frame and the displacement field.

The *working frame* is where matching happens: the optical pixel grid when both inputs are georeferenced (the
georeference is the starting guess, so a displacement is the error of the georeference), the SAR's own pixels in
pixel space. A registration is a :class:`DisplacementField`: for optical pixel ``p`` the working-frame position
``p + field(p)``, sampled on a regular lattice of optical pixels and interpolated bilinearly in between. The
:class:`WorkingFrame` turns working-frame positions into pixels of a SAR file (the registered SAR itself, or any
other product on its grid or georeferenced like it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from osreg.geometry import apply_transform


@dataclass(frozen=True)
class WorkingFrame:
    """How working-frame positions map to the pixels of a SAR raster.

    Attributes:
        georeferenced: the working frame is the optical grid (``grid_crs``, ``grid_transform``); else it is the SAR's
            own pixel grid.
        grid_crs, grid_transform: the optical grid's georeferencing.
        sar_crs, sar_transform: the SAR raster's georeferencing.
    """

    georeferenced: bool
    grid_crs: CRS | None = None
    grid_transform: Affine | None = None
    sar_crs: CRS | None = None
    sar_transform: Affine | None = None

    @classmethod
    def pixel_space(cls) -> WorkingFrame:
        return cls(False)

    @property
    def affine(self) -> np.ndarray | None:
        """The 3x3 working px -> SAR px matrix when the mapping is affine (same CRS, or pixel space)."""
        if not self.georeferenced:
            return np.eye(3)
        if self.grid_crs != self.sar_crs:
            return None
        half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
        unhalf = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
        to = np.array(self.grid_transform).reshape(3, 3)
        ts = np.array(self.sar_transform).reshape(3, 3)
        return unhalf @ np.linalg.inv(ts) @ to @ half

    def to_sar(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAR pixel coordinates of working-frame coordinates (arrays of any equal shape)."""
        A = self.affine
        if A is not None:
            if np.allclose(A, np.eye(3)):
                return x, y
            return (A[0, 0] * x + A[0, 1] * y + A[0, 2], A[1, 0] * x + A[1, 1] * y + A[1, 2])
        t = self.grid_transform
        c, r = x.ravel() + 0.5, y.ravel() + 0.5
        mx, my = t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f
        sx, sy = warp_transform(self.grid_crs, self.sar_crs, mx.tolist(), my.tolist())
        inv = ~self.sar_transform
        sx, sy = np.asarray(sx), np.asarray(sy)
        col = inv.a * sx + inv.b * sy + inv.c - 0.5
        row = inv.d * sx + inv.e * sy + inv.f - 0.5
        return col.reshape(x.shape), row.reshape(y.shape)


@dataclass(frozen=True)
class DisplacementField:
    """Working-frame position minus optical pixel position, on a lattice of optical pixels.

    Attributes:
        dx, dy: ``(gh, gw)`` float32; node ``(i, j)`` is optical pixel ``(j * step, i * step)``.
        step: lattice spacing in optical pixels.
        width, height: the optical grid's size (the lattice covers it).
    """

    dx: np.ndarray
    dy: np.ndarray
    step: int
    width: int
    height: int

    @staticmethod
    def lattice_shape(width: int, height: int, step: int) -> tuple[int, int]:
        return math.ceil((height - 1) / step) + 1, math.ceil((width - 1) / step) + 1

    @classmethod
    def lattice(cls, width: int, height: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Optical pixel coordinates ``(gh, gw)`` of the lattice nodes."""
        gh, gw = cls.lattice_shape(width, height, step)
        return np.meshgrid(np.arange(gw, dtype=np.float64) * step, np.arange(gh, dtype=np.float64) * step)

    @classmethod
    def from_mapping(cls, mapping, width: int, height: int, step: int) -> DisplacementField:
        """The field of ``mapping`` ((N, 2) optical px -> (N, 2) working px), sampled on the lattice."""
        gx, gy = cls.lattice(width, height, step)
        q = mapping(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape + (2,))
        return cls((q[..., 0] - gx).astype(np.float32), (q[..., 1] - gy).astype(np.float32), step, width, height)

    @classmethod
    def from_transform(cls, H: np.ndarray, width: int, height: int, step: int) -> DisplacementField:
        """The field of a plane transform (optical px -> working px)."""
        return cls.from_mapping(lambda p: apply_transform(H, p), width, height, step)

    def sample(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The field at optical pixel coordinates (float32 arrays of any equal shape), bilinear between nodes and
        extended flat beyond the lattice."""
        u = np.ascontiguousarray((x / self.step).astype(np.float32))
        v = np.ascontiguousarray((y / self.step).astype(np.float32))
        fx = cv2.remap(self.dx, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fy = cv2.remap(self.dy, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return fx, fy

    def positions(self, col0: int, row0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Working-frame positions ``(h, w)`` of the optical pixels of a block."""
        x, y = np.meshgrid(np.arange(col0, col0 + w, dtype=np.float32), np.arange(row0, row0 + h, dtype=np.float32))
        fx, fy = self.sample(x, y)
        return x + fx, y + fy

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Working-frame positions of optical pixel coordinates ``(N, 2)``."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if len(xy) == 0:
            return xy.copy()
        n, cols = len(xy), 1024  # remap takes images under 32767 px a side: points in rows of 1024
        pad = np.zeros((-n % cols, 2))
        grid = np.vstack([xy, pad]).astype(np.float32).reshape(-1, cols, 2)
        fx, fy = self.sample(grid[..., 0], grid[..., 1])
        return xy + np.stack([fx.ravel()[:n], fy.ravel()[:n]], axis=1)


__all__ = ["DisplacementField", "WorkingFrame"]

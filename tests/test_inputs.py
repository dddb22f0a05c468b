"""Inputs: exit 2 for too little data also when georeferenced, constant images named as such, edge-connected black
borders without declared nodata masked (and the switch that keeps them)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, textured, write_tif

from osreg.cli import main
from osreg.io.raster import Raster, read_raster
from osreg.io.validity import edge_connected, mask_edge_borders


def run(*args):
    return CliRunner().invoke(main, ["-q", *(str(a) for a in args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_grid():
    with rasterio.open(DEMO_SAR) as s:
        return s.crs, s.transform, s.read(1)


@pytest.mark.parametrize("case", ["one_pixel", "thin_strip", "valid_strip", "overlap_strip"])
def test_too_little_georeferenced_data_exits_2(tmp_path, demo_grid, case):
    crs, t, sar = demo_grid
    if case == "one_pixel":  # a 1x1 SAR inside the optical footprint
        path = write_tif(tmp_path / "s.tif", sar[190:191, 190:191], crs, t @ Affine.translation(190, 190))
        expect = f"Error: SAR image {path} is 1x1 px; method 'cfog' needs at least 64x64 px"
    elif case == "thin_strip":  # a 384 x 6 px strip
        path = write_tif(tmp_path / "s.tif", sar[100:106], crs, t @ Affine.translation(0, 100))
        expect = f"Error: SAR image {path} is 384x6 px; method 'cfog' needs at least 64x64 px"
    elif case == "valid_strip":  # full size, but nodata except 6 rows
        data = np.zeros_like(sar)
        data[100:106] = np.maximum(sar[100:106], 1)
        path = write_tif(tmp_path / "s.tif", data, crs, t, nodata=0)
        expect = f"Error: too little valid data in SAR image {path}: its 2304 valid px span 384x6 px; method 'cfog'"
    else:  # a full SAR that overlaps the optical footprint in a 10 px strip only
        path = write_tif(tmp_path / "s.tif", sar, crs, t @ Affine.translation(374, 0))
        expect = "Error: too little overlap to register: the valid SAR covers"
    res = run("register", DEMO_OPTICAL, path, "-o", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith(expect), res.stderr
    assert not (tmp_path / "o").exists()


def test_a_constant_optical_image_is_named_as_such(tmp_path):
    flat = write_tif(tmp_path / "flat.tif", np.full((3, 100, 100), 7, np.uint8))
    res = run("match", flat, DEMO_SAR)
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"Error: optical image {flat} is constant (every valid pixel is (7, 7, 7)): there "
                                  "is nothing to match")


def test_edge_connected_zero_borders_are_masked_and_interior_zeros_kept():
    img = (textured((80, 100), seed=2) * 200 + 20).astype(np.uint8)
    img[:, :7] = 0  # a black border on the left
    img[70:, :] = 0  # and at the bottom
    img[30:40, 40:50] = 0  # zeros inside the image, not connected to an edge: real dark data
    r = Raster(img[None], np.ones(img.shape, bool))
    masked, n = mask_edge_borders(r, "SAR")
    assert n == 7 * 70 + 10 * 100
    assert not masked.mask[:, :7].any() and not masked.mask[70:].any()
    assert masked.mask[30:40, 40:50].all() and masked.mask[:70, 7:].all()
    # a declared nodata value says what is invalid: then zeros are data and nothing changes
    declared = Raster(img[None], np.ones(img.shape, bool), nodata=255.0)
    assert mask_edge_borders(declared, "SAR") == (declared, 0)
    # every band must be zero (a pixel black in one band only is data)
    rgb = np.stack([img, img, np.full_like(img, 5)])
    assert mask_edge_borders(Raster(rgb, np.ones(img.shape, bool)), "optical")[1] == 0
    assert not edge_connected(np.zeros((5, 5), bool)).any()


def rotated_with_black_corners(tmp_path, angle=25.0):
    """The demo SAR turned by ``angle`` onto a canvas with black (0) corners, written without a nodata value."""
    with rasterio.open(DEMO_SAR) as s:
        sar = s.read(1)
    sar = np.maximum(sar, 1)  # the demo has no exact zeros of its own
    h, w = sar.shape
    R = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    turned = cv2.warpAffine(sar, R, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return write_tif(tmp_path / "turned.tif", turned), np.vstack([R, [0, 0, 1]])


def test_black_borders_are_masked_in_a_registration_unless_switched_off(tmp_path):
    path, R = rotated_with_black_corners(tmp_path)
    assert read_raster(path, "SAR").mask.all()  # no nodata declared: every pixel reads as valid
    res = run("register", DEMO_OPTICAL, path, "--method", "rift", "--no-georef", "-o", tmp_path / "on")
    report = json.loads((tmp_path / "on" / "report.json").read_text())
    assert report["border_masked_px"]["sar"] > 20000 and report["border_masked_px"]["optical"] == 0
    res = run("register", DEMO_OPTICAL, path, "--method", "rift", "--no-georef", "--no-border-mask", "-o",
              tmp_path / "off")
    assert res.exit_code in (0, 3)
    report_off = json.loads((tmp_path / "off" / "report.json").read_text())
    assert report_off["border_masked_px"] == {}
    assert report_off["config"]["mask_borders"] is False
    # tie points never lie on the masked border
    with rasterio.open(path) as s:
        turned = s.read(1)
    rows = np.loadtxt(tmp_path / "on" / "tiepoints.csv", delimiter=",", skiprows=1, usecols=(3, 4))
    xs, ys = np.round(rows[:, 0]).astype(int), np.round(rows[:, 1]).astype(int)
    assert (turned[ys.clip(0, 383), xs.clip(0, 383)] > 0).all()

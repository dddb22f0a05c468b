"""Raster reading (masks, bands, CRS), GeoTIFF round trip, atomic non-clobbering writes, reprojection."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import UTM33, UTM33_T, textured, write_tif

from osreg.errors import (
    InputError,
    NodataError,
    NoOverlapError,
    OutputExistsError,
    RasterReadError,
)
from osreg.io.georef import reproject_sar_to_optical_grid
from osreg.io.raster import read_raster, write_geotiff


def test_missing_file_message(tmp_path):
    with pytest.raises(RasterReadError, match=r"^SAR image not found: .*nothere\.tif$"):
        read_raster(tmp_path / "nothere.tif", "SAR")


def test_unreadable_file_message(tmp_path):
    p = tmp_path / "junk.tif"
    p.write_bytes(b"this is not a raster")
    with pytest.raises(RasterReadError, match=r"^cannot read optical image .*junk\.tif as a raster \(GeoTIFF, PNG or JPEG\)"):
        read_raster(p, "optical")
    assert isinstance(RasterReadError("x"), OSError) and isinstance(RasterReadError("x"), ValueError)


def test_all_nodata_message(tmp_path):
    p = write_tif(tmp_path / "empty.tif", np.zeros((32, 32), np.uint8), nodata=0)
    with pytest.raises(NodataError, match=r"^SAR image .*empty\.tif contains only nodata values \(nodata=0\.0\)"):
        read_raster(p, "SAR")


def test_nodata_and_nan_become_mask(tmp_path):
    a = np.ones((2, 20, 30), np.float32)
    a[:, 0, 0] = -9999
    a[1, 5, 5] = np.nan
    r = read_raster(write_tif(tmp_path / "m.tif", a, nodata=-9999), "SAR")
    assert r.mask.sum() == 20 * 30 - 2
    assert not r.mask[0, 0] and not r.mask[5, 5]


def test_png_alpha_is_mask_not_band(tmp_path):
    rgba = np.full((4, 16, 16), 200, np.uint8)
    rgba[3, :8] = 0
    p = tmp_path / "a.png"
    with rasterio.open(p, "w", driver="PNG", width=16, height=16, count=4, dtype="uint8") as dst:
        dst.write(rgba)
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    r = read_raster(p, "optical")
    assert r.count == 3
    assert r.mask[:8].sum() == 0 and r.mask[8:].all()
    assert not r.is_georeferenced


def test_band_index_out_of_range(tmp_path):
    p = write_tif(tmp_path / "b.tif", np.ones((2, 8, 8), np.uint16))
    with pytest.raises(InputError, match=r"^optical image .*b\.tif has 2 band\(s\); band index 3 does not exist"):
        read_raster(p, "optical", bands=[3])


def test_geotiff_round_trip_keeps_crs_transform_nodata(tmp_path):
    data = (textured((40, 50)) * 1000).astype(np.uint16)
    src = write_tif(tmp_path / "src.tif", data, UTM33, UTM33_T, nodata=0)
    r = read_raster(src, "optical")
    assert r.crs.to_epsg() == 32633 and r.transform == UTM33_T and r.nodata == 0
    out = write_geotiff(tmp_path / "out.tif", r.data, r.crs, r.transform, nodata=r.nodata)
    back = read_raster(out, "optical")
    assert back.crs == r.crs and back.transform == r.transform and back.nodata == 0
    np.testing.assert_array_equal(back.data, r.data)
    # pixel centre convention: pixel (0, 0) is the centre of the top-left pixel
    np.testing.assert_allclose(r.pixel_to_map([[0, 0]]), [[500005.0, 5199995.0]])
    np.testing.assert_allclose(r.map_to_pixel(r.pixel_to_map([[3.25, 7.5]])), [[3.25, 7.5]])


def test_bigearthnet_round_trip_real_crs(shared_data, tmp_path):
    vv = next((shared_data / "bigearthnet_example_pypi" / "BigEarthNet-S1-Example").glob("*/*_VV.tif"))
    r = read_raster(vv, "SAR")
    assert r.is_georeferenced and r.crs.to_epsg() is not None and r.dtype == "float32"
    out = write_geotiff(tmp_path / "vv.tif", r.data, r.crs, r.transform)
    back = read_raster(out, "SAR")
    assert back.crs == r.crs and back.transform == r.transform
    np.testing.assert_array_equal(back.data, r.data)
    from osreg.preprocess import detect_sar_scale

    assert detect_sar_scale(r.data[:, r.mask], r.dtype) == "db"


def test_write_refuses_overwrite_and_leaves_no_temp(tmp_path):
    p = write_geotiff(tmp_path / "x.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(OutputExistsError, match=r"output already exists and would be replaced: .*x\.tif \(pass --overwrite"):
        write_geotiff(p, np.ones((8, 8), np.uint8))
    assert read_raster(p, "x").data.max() == 0
    write_geotiff(p, np.ones((8, 8), np.uint8), overwrite=True)
    assert read_raster(p, "x").data.max() == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.tif"]


def test_reprojection_across_crs_and_pixel_size(tmp_path):
    """A SAR in WGS84 at another pixel size lands on the UTM optical grid where its content belongs."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    opt = textured((120, 120), seed=1)
    o = read_raster(write_tif(tmp_path / "o.tif", opt, UTM33, UTM33_T), "optical")
    t, w, h = calculate_default_transform(UTM33, "EPSG:4326", 120, 120, *rasterio.transform.array_bounds(120, 120, UTM33_T),
                                          resolution=(0.0002, 0.0002))
    sar = np.zeros((h, w), np.float32)
    reproject(opt, sar, src_transform=UTM33_T, src_crs=UTM33, dst_transform=t, dst_crs="EPSG:4326",
              resampling=Resampling.bilinear)
    s = read_raster(write_tif(tmp_path / "s.tif", sar, "EPSG:4326", t), "SAR")
    gm = reproject_sar_to_optical_grid(o, s)
    on = gm.sar_on_grid
    assert on.data.shape == (1, 120, 120) and on.crs == o.crs
    inner = on.mask.copy()
    inner[:10], inner[-10:], inner[:, :10], inner[:, -10:] = False, False, False, False
    assert np.corrcoef(on.data[0][inner], opt[inner])[0, 1] > 0.95
    # grid pixel -> SAR pixel -> map position agrees with the optical position
    xy = np.array([[10.0, 20.0], [100.0, 60.0]])
    back = gm.grid_to_sar_pixels(xy)
    lonlat = s.pixel_to_map(back)
    from rasterio.warp import transform as wt

    ex, ey = wt(UTM33, "EPSG:4326", *o.pixel_to_map(xy).T.tolist())
    np.testing.assert_allclose(lonlat, np.stack([ex, ey], 1), atol=1e-9)


def test_no_overlap_message(tmp_path):
    o = read_raster(write_tif(tmp_path / "o.tif", textured((64, 64)), UTM33, UTM33_T), "optical")
    far = Affine(10.0, 0, 900000.0, 0, -10.0, 5200000.0)
    s = read_raster(write_tif(tmp_path / "s.tif", textured((64, 64)), UTM33, far), "SAR")
    with pytest.raises(NoOverlapError, match=r"^optical and SAR images do not overlap: optical covers \(500000\.0, "
                                             r"5199360\.0, 500640\.0, 5200000\.0\) and SAR covers \(900000\.0, "):
        reproject_sar_to_optical_grid(o, s)

"""Units and formats of the outputs: ground metres whatever the CRS, valid GeoJSON, a registration across CRSs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, write_tif

from osreg.cli import main
from osreg.io.georef import WGS84_F, ground_distance_m


def run(*args):
    return CliRunner().invoke(main, ["-q", *(str(a) for a in args)], catch_exceptions=False)


def mercator_ground_factor(lat_deg: float) -> float:
    """Ground metres per World Mercator (EPSG:3395) metre at a latitude: 1 / k, k = sqrt(1 - e^2 sin^2) / cos."""
    phi = np.radians(lat_deg)
    e2 = WGS84_F * (2 - WGS84_F)
    return float(np.cos(phi) / np.sqrt(1 - e2 * np.sin(phi) ** 2))


def test_ground_distance_removes_the_projection_scale():
    from rasterio.warp import transform

    # World Mercator at 30 degrees north stretches distances by 1 / cos(30) ~ 15 %
    x, y = transform("EPSG:4326", "EPSG:3395", [10.0], [30.0])
    p0 = np.array([[x[0], y[0]], [x[0], y[0]]])
    p1 = p0 + [[100.0, 0.0], [0.0, 100.0]]
    d = ground_distance_m("EPSG:3395", p0, p1)
    np.testing.assert_allclose(d, 100 * mercator_ground_factor(30.0), rtol=2e-4)
    assert 85 < d[0] < 87
    # UTM 33N on its central meridian: scale factor 0.9996
    d = ground_distance_m("EPSG:32633", np.array([[500000.0, 5e6]]), np.array([[500100.0, 5e6]]))
    np.testing.assert_allclose(d, 100 / 0.9996, rtol=2e-4)
    # geographic coordinates: 0.001 degree of latitude at the equator ~ 110.6 m
    d = ground_distance_m("EPSG:4326", np.array([[0.0, 0.0]]), np.array([[0.0, 0.001]]))
    np.testing.assert_allclose(d, 110.574, rtol=1e-3)
    assert ground_distance_m("EPSG:4326", np.zeros((0, 2)), np.zeros((0, 2))).shape == (0,)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert run("register", DEMO_OPTICAL, DEMO_SAR, "-o", out).exit_code == 0
    return json.loads((out / "report.json").read_text()), out


def test_misregistration_in_ground_metres_in_world_mercator(demo_report):
    """The demo pair is in World Mercator at 29.6 degrees north: a 10 m CRS pixel is 8.7 m on the ground, and the
    misregistration in metres says so (CRS units would make it 15 % too large)."""
    report, _ = demo_report
    with rasterio.open(DEMO_OPTICAL) as ds:
        from rasterio.warp import transform

        _, lat = transform(ds.crs, "EPSG:4326", [ds.transform.c + 1920], [ds.transform.f - 1920])
    factor = mercator_ground_factor(lat[0])
    assert 0.86 < factor < 0.88
    mis = report["misregistration_of_georeference"]
    np.testing.assert_allclose(mis["ground_pixel_size_m"], [10 * factor, 10 * factor], rtol=1e-3)
    np.testing.assert_allclose(mis["mean_m"], mis["mean_px"] * 10 * factor, rtol=5e-3)
    np.testing.assert_allclose(mis["max_m"], mis["max_px"] * 10 * factor, rtol=5e-3)


def test_geojson_points_are_lon_lat_when_georeferenced(demo_report):
    _, out = demo_report
    gj = json.loads((out / "tiepoints.geojson").read_text())
    rows = list(csv.DictReader(open(out / "tiepoints.csv")))
    assert len(gj["features"]) == len(rows) > 30
    from rasterio.warp import transform

    r = rows[0]
    lon, lat = transform("EPSG:3395", "EPSG:4326", [float(r["map_x"])], [float(r["map_y"])])
    np.testing.assert_allclose(gj["features"][0]["geometry"]["coordinates"], [lon[0], lat[0]], atol=1e-6)


def test_geojson_without_georeference_has_no_fake_coordinates(tmp_path):
    """Pixel coordinates must never pose as longitude/latitude: features without a georeference have a null
    geometry (RFC 7946, an unlocated feature) and their pixel positions in the properties."""
    with rasterio.open(DEMO_OPTICAL) as o, rasterio.open(DEMO_SAR) as s:
        opt = write_tif(tmp_path / "o.tif", o.read())
        sar = write_tif(tmp_path / "s.tif", s.read())
    res = run("register", opt, sar, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    gj = json.loads((tmp_path / "out" / "tiepoints.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) > 30
    for f in gj["features"]:
        assert f["type"] == "Feature" and f["geometry"] is None
        assert set(f["properties"]) >= {"x_opt", "y_opt", "x_sar", "y_sar"}
        assert f["properties"]["map_x"] is None
    with rasterio.open(tmp_path / "out" / "registered_sar.tif") as ds:
        assert ds.crs is None


def test_registration_across_crs_and_pixel_size(tmp_path):
    """A SAR delivered in WGS84 at another pixel size: registered onto the optical (World Mercator) grid, tie points
    in the SAR's own pixels, the transform marked approximate."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(DEMO_SAR) as s:
        src, crs, t = s.read(1).astype(np.float32), s.crs, s.transform
        bounds = s.bounds
    dt, w, h = calculate_default_transform(crs, "EPSG:4326", 384, 384, *bounds, resolution=(1.2e-4, 1.2e-4))
    geo = np.full((h, w), np.nan, np.float32)
    reproject(src, geo, src_transform=t, src_crs=crs, dst_transform=dt, dst_crs="EPSG:4326", dst_nodata=np.nan,
              resampling=Resampling.bilinear)
    sar = write_tif(tmp_path / "sar_wgs84.tif", geo, "EPSG:4326", dt, nodata=float("nan"))
    res = run("register", DEMO_OPTICAL, sar, "--sar-scale", "display", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["sar"]["crs"] == "EPSG:4326" and report["transform"]["optical_px_to_sar_px_exact"] is False
    # the same simulated geocoding error as the demo, measured through the other CRS: ~(6.3, 3.8) px
    mis = report["misregistration_of_georeference"]
    assert np.hypot(mis["shift_x_px"] - 6.3, mis["shift_y_px"] - 3.8) < 1.5
    with rasterio.open(out / "registered_sar.tif") as ds, rasterio.open(DEMO_OPTICAL) as o:
        assert ds.crs == o.crs and ds.transform == o.transform and ds.shape == o.shape
        registered = ds.read(1)
    valid = np.isfinite(registered)
    assert valid.mean() > 0.8
    # the SAR's true position is the identity (up to the pair's own ~1 px residual: 0.79 measured; 2 px off: ~0.6)
    assert np.corrcoef(registered[valid], src[valid])[0, 1] > 0.75
    # tie points: SAR pixels of the WGS84 raster; through its (falsified) georeference they land where the optical
    # grid says, displaced by the misregistration the report gives
    rows = list(csv.DictReader(open(out / "tiepoints.csv")))
    inl = [r for r in rows if r["inlier"] == "1"]
    with rasterio.open(sar) as ds:
        from rasterio.warp import transform

        lon, lat = ds.xy([float(r["y_sar"]) for r in inl], [float(r["x_sar"]) for r in inl])
    x, y = transform("EPSG:4326", "EPSG:3395", lon, lat)
    with rasterio.open(DEMO_OPTICAL) as o:
        col, row = ~o.transform @ (np.array(x), np.array(y))
    d = np.stack([col - 0.5 - np.array([float(r["x_opt"]) for r in inl]),
                  row - 0.5 - np.array([float(r["y_opt"]) for r in inl])], 1)
    np.testing.assert_allclose(np.median(d, axis=0), [mis["shift_x_px"], mis["shift_y_px"]], atol=1.0)

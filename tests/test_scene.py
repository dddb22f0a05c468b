"""Whole scenes: windowed reads, tie points in windows, the local model, block-wise outputs, osreg apply."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, write_tif

from osreg.cli import main
from osreg.errors import InputError
from osreg.eval.scene_case import SceneCase, field_residuals, write_scene_case
from osreg.io.windows import RasterSource
from osreg.pipeline import make_config
from osreg.scene import SceneConfig
from osreg.scene.field import DisplacementField, WorkingFrame
from osreg.scene.model import WindowShifts, consistent_with_neighbours, fit_scene_model
from osreg.scene.register import register_scene

# the demo arrays' own misalignment (optical px -> SAR px, `osreg match --no-georef` on the demo pair): the tiles of
# the synthetic scenes are aligned with it first, so that the scene's field is the only displacement
DEMO_ARRAY_H = np.array([[0.99617, -0.00044, -0.0525], [-0.00324, 0.99714, 1.6619], [0, 0, 1.0]])


def demo_tiles() -> list[tuple[np.ndarray, np.ndarray]]:
    with rasterio.open(DEMO_OPTICAL) as o, rasterio.open(DEMO_SAR) as s:
        opt, sar = o.read(), s.read(1)
    aligned = cv2.warpPerspective(sar, DEMO_ARRAY_H, sar.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT)
    return [(opt, aligned)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def scene_case(tmp_path_factory):
    """A 2048 px georeferenced scene whose SAR is displaced by a ~40 px offset and a smooth field of up to 5 px."""
    d = tmp_path_factory.mktemp("scene")
    files = write_scene_case(demo_tiles(), SceneCase.draw(2048, 40.0, 5.0, seed=3), d / "case")
    return files


@pytest.fixture(scope="module")
def registered(scene_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "out"
    res = run("-q", "register", scene_case["optical"], scene_case["sar"], "-o", out, "--spacing", "256", "--scene")
    assert res.exit_code == 0, res.output
    return out


def test_scene_registration_recovers_a_known_field(scene_case, registered):
    """Default model on a 2048 px scene: the local model; the field is within a pixel of the truth (an affine fit of
    the same tie points is not)."""
    report = json.loads((registered / "report.json").read_text())
    assert report["verdict"] == "good" and report["model"] == "local"
    assert "local model on" in report["scene"]["model_choice"]["reason"]
    assert report["scene"]["windows_with_tie_points"] >= 40
    d = field_residuals(registered / "displacement_field.tif", scene_case["case"])
    assert np.median(d) < 0.8 and np.percentile(d, 95) < 2.0, (np.median(d), np.percentile(d, 95))
    affine = register_scene(scene_case["optical"], scene_case["sar"], make_config("cfog"),
                            SceneConfig(spacing=256, model="affine"))
    gx, gy = np.meshgrid(np.arange(200, 1848, 97.0), np.arange(200, 1848, 97.0))
    p = np.stack([gx.ravel(), gy.ravel()], 1)
    case = SceneCase.from_dict(json.loads(open(scene_case["case"]).read()))
    err_affine = np.linalg.norm(affine.displacement.map_points(p) - case.truth(p), axis=1)
    assert affine.model.kind == "affine" and np.percentile(err_affine, 95) > 2.5


def test_scene_outputs_are_a_cloud_optimised_set(scene_case, registered):
    names = sorted(p.name for p in registered.iterdir())
    assert names == ["displacement_field.tif", "quicklook.png", "registered_sar.tif", "report.json",
                     "tiepoints.csv", "tiepoints.geojson"]
    report = json.loads((registered / "report.json").read_text())
    with rasterio.open(registered / "registered_sar.tif") as ds, rasterio.open(scene_case["optical"]) as o:
        assert ds.crs == o.crs and ds.transform == o.transform and ds.shape == o.shape
        assert ds.block_shapes[0] == (512, 512) and ds.compression.value == "DEFLATE"
        assert ds.overviews(1) == [2, 4]
        assert ds.tags()["OSREG_RUN_ID"] == report["run_id"]
        assert np.isnan(ds.nodata)
    with rasterio.open(registered / "displacement_field.tif") as f:
        assert f.descriptions == ("dx_px", "dy_px", "dx_east_m", "dy_north_m")
        dx, dy, east, north = f.read()
        # 10 m pixels of a north-up UTM grid: east = 10 dx, north = -10 dy
        assert np.allclose(east, 10 * dx, atol=1e-3) and np.allclose(north, -10 * dy, atol=1e-3)
        # the georeference is off by the ~40 px offset everywhere
        assert 30 < np.median(np.hypot(dx, dy)) < 50
    rows = (registered / "tiepoints.csv").read_text().splitlines()
    assert rows[0] == "id,x_opt,y_opt,x_sar,y_sar,map_x,map_y,residual_px,confidence,inlier"
    assert len(rows) - 1 == report["matches"] and report["inliers"] > 500


def test_apply_reproduces_the_registered_sar(scene_case, registered, tmp_path):
    """`osreg apply` with the field (or the report) on the same SAR writes the registered SAR again, bit for bit;
    on another product of it (here the SAR's square) the same geometry."""
    out = tmp_path / "applied.tif"
    res = run("-q", "apply", registered / "report.json", scene_case["sar"], "-o", out)
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as a, rasterio.open(registered / "registered_sar.tif") as r:
        assert np.array_equal(a.read(), r.read(), equal_nan=True)
        assert a.transform == r.transform and a.overviews(1) == [2, 4]
    res = run("-q", "apply", registered / "report.json", scene_case["sar"], "-o", out)
    assert res.exit_code == 2 and "already exists" in res.output
    with rasterio.open(scene_case["sar"]) as s:
        prof, sq = s.profile, s.read(1).astype(np.float32) ** 2
    prof.update(dtype="float32", nodata=float("nan"))
    sq[sq == 0] = np.nan
    with rasterio.open(tmp_path / "sq.tif", "w", **prof) as dst:
        dst.write(sq[None])
    res = run("-q", "apply", registered / "displacement_field.tif", tmp_path / "sq.tif", "-o", tmp_path / "sq_reg.tif")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "sq_reg.tif") as a, rasterio.open(registered / "registered_sar.tif") as r:
        a1, r1 = a.read(1, window=((900, 1100), (900, 1100))), r.read(1, window=((900, 1100), (900, 1100)))
    ok = np.isfinite(a1) & np.isfinite(r1)
    assert ok.mean() > 0.99 and np.corrcoef(np.sqrt(a1[ok]), r1[ok])[0, 1] > 0.97


def test_apply_refuses_what_does_not_fit(registered, tmp_path):
    small = write_tif(tmp_path / "small.tif", np.ones((50, 60), np.uint8))
    res = run("apply", registered / "displacement_field.tif", small, "-o", tmp_path / "x.tif")
    assert res.exit_code == 2
    assert "has no CRS or geotransform, but the registration was made on georeferenced images" in res.output
    res = run("apply", small, small, "-o", tmp_path / "y.tif")
    assert res.exit_code == 2 and "is not an osreg displacement field (no OSREG_FIELD tag)" in res.output
    failed = tmp_path / "report.json"
    failed.write_text(json.dumps({"verdict": "failed", "outputs": {"report": str(failed)}}))
    res = run("apply", failed, small, "-o", tmp_path / "z.tif")
    assert res.exit_code == 2 and "lists no displacement field: its registration was not trusted" in res.output


def test_apply_on_a_chip_registration_in_pixel_space(tmp_path):
    """Every trusted registration writes its field; in pixel space the input must be on the SAR's grid."""
    out = tmp_path / "out"
    assert run("-q", "register", DEMO_OPTICAL, DEMO_SAR, "-o", out, "--no-georef").exit_code == 0
    res = run("-q", "apply", out / "displacement_field.tif", DEMO_SAR, "-o", tmp_path / "a.tif")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(out / "registered_sar.tif") as r:
        x, y = a.read(1), r.read(1)
    ok = np.isfinite(x) & np.isfinite(y)
    assert ok.mean() > 0.9 and np.abs(x[ok] - y[ok]).max() < 0.05  # bilinear at the same positions
    wrong = write_tif(tmp_path / "w.tif", np.ones((100, 120), np.uint8))
    res = run("apply", out / "displacement_field.tif", wrong, "-o", tmp_path / "b.tif")
    assert res.exit_code == 2
    assert "is 120x100 pixels but the registered SAR was 384x384: in pixel space the input must be on the SAR's " \
           "pixel grid" in res.output


def test_a_scene_is_read_in_windows_only(scene_case, monkeypatch, tmp_path):
    """No full-resolution read larger than a window or a resampling block: the scene is never in memory whole."""
    from osreg.scene.outputs import write_scene_outputs

    sizes = []
    original = RasterSource.read

    def spy(self, window=None, factor=1, **kw):
        if factor == 1:
            w = window or (0, 0, self.width, self.height)
            sizes.append(w[2] * w[3])
        return original(self, window, factor, **kw)

    monkeypatch.setattr(RasterSource, "read", spy)
    calls = []

    def progress(desc, total):
        calls.append((desc, total))
        from osreg.progress import silent
        return silent(desc, total)

    scene = SceneConfig(spacing=512, block=512)
    sreg = register_scene(scene_case["optical"], scene_case["sar"], make_config("cfog"), scene, progress)
    write_scene_outputs(sreg, tmp_path / "out", progress=progress)
    assert sizes and max(sizes) <= (512 + 64) ** 2 < 2048 * 2048 / 10
    assert calls == [("tie points", 16), ("resampling", 16)]


def test_displacement_field_of_a_transform_is_exact_between_nodes():
    H = np.array([[1.01, 0.02, 30.5], [-0.015, 0.99, -12.25], [0, 0, 1.0]])
    f = DisplacementField.from_transform(H, 1000, 700, 32)
    assert f.dx.shape == (23, 33)  # nodes at 0, 32, ..., 1024 >= 999 and 0, ..., 704 >= 699
    p = np.random.default_rng(0).uniform(0, [999, 699], size=(5000, 2))
    q = H[:2, :2] @ p.T + H[:2, 2:]
    assert np.abs(f.map_points(p) - q.T).max() < 1e-3


def test_working_frame_matches_the_georeference_across_crs():
    grid = Affine(10, 0, 500000, 0, -10, 4000000)
    same = WorkingFrame(True, rasterio.crs.CRS.from_epsg(32611), grid, rasterio.crs.CRS.from_epsg(32611),
                        Affine(5, 0, 499990, 0, -5, 4000020))
    x, y = same.to_sar(np.array([0.0, 10.0]), np.array([0.0, 20.0]))
    # pixel (0, 0) centre = (500005, 3999995) -> SAR column (15 / 5) - 0.5, row (25 / 5) - 0.5
    assert np.allclose(x, [2.5, 22.5]) and np.allclose(y, [4.5, 44.5])
    lonlat = WorkingFrame(True, rasterio.crs.CRS.from_epsg(32611), grid, rasterio.crs.CRS.from_epsg(4326),
                          Affine(1e-4, 0, -117.0, 0, -1e-4, 36.2))
    x, y = lonlat.to_sar(np.array([[0.0, 100.0]]), np.array([[0.0, 100.0]]))
    lon, lat = rasterio.warp.transform("EPSG:32611", "EPSG:4326", [500005.0, 501005.0], [3999995.0, 3998995.0])
    assert x.shape == (1, 2)
    assert np.allclose(x[0], (np.array(lon) + 117.0) / 1e-4 - 0.5) and np.allclose(y[0], (36.2 - np.array(lat)) / 1e-4 - 0.5)
    assert 105 < x[0, 1] - x[0, 0] < 115  # 1000 m east is about 111 pixels of 1e-4 degrees at 36 degrees north


def test_windowed_reads_decimate_and_pad(tmp_path):
    data = np.arange(64 * 48, dtype=np.float32).reshape(48, 64)
    path = write_tif(tmp_path / "a.tif", data, "EPSG:32611", Affine(10, 0, 0, 0, -10, 0), nodata=-1.0)
    src = RasterSource.open(path, "SAR")
    dec = src.read(factor=4)
    assert dec.data.shape == (1, 12, 16) and dec.transform == Affine(40, 0, 0, 0, -40, 0)
    assert np.isclose(dec.data[0, 0, 0], data[:4, :4].mean())
    part = src.read((-5, 40, 10, 10))
    assert part.mask.sum() == 5 * 8 and part.data[0, 0, 5] == data[40, 0]
    assert part.transform == Affine(10, 0, -50, 0, -10, -400)
    with pytest.raises(ValueError):
        src.read((-5, 40, 10, 10), factor=2)


def test_local_outliers_are_rejected_and_the_model_chosen_by_held_out_error():
    gx, gy = np.meshgrid(np.arange(256.0, 8192, 512), np.arange(256.0, 8192, 512))
    pos = np.stack([gx.ravel(), gy.ravel()], 1)
    smooth = np.stack([4 * np.sin(pos[:, 0] / 1500), 3 * np.cos(pos[:, 1] / 1800)], 1)
    shift = smooth + [2.0, -1.0]
    shift[37] += [9.0, 0.0]  # one window matched a wrong place
    ws = WindowShifts(pos, shift, np.full(len(pos), 40), np.full(len(pos), 0.2), np.arange(len(pos)))
    keep = consistent_with_neighbours(ws, 512)
    assert not keep[37] and keep.sum() == len(pos) - 1
    ws = ws.subset(keep)
    model = fit_scene_model(ws, ws.position, ws.position + ws.shift, "auto", 512, make_config().geometry, 12)
    assert model.kind == "local" and model.info["cv_error_local_px"] < 0.5 * model.info["cv_error_affine_px"]
    err = np.linalg.norm(model.correction(ws.position) - ws.shift, axis=1)
    assert np.median(err) < 0.2
    flat = WindowShifts(ws.position, np.tile([2.0, -1.0], (len(ws), 1)), ws.count, ws.spread, ws.window)
    model = fit_scene_model(flat, flat.position, flat.position + flat.shift, "auto", 512, make_config().geometry, 12)
    assert model.kind == "affine" and "does not beat the affine fit" in model.info["reason"]


def test_large_inputs_are_scenes_by_default():
    from osreg.scene import is_scene

    assert not is_scene(2048, 2048) and is_scene(2049, 100) and is_scene(10980, 10980)


def test_scene_config_is_checked():
    with pytest.raises(InputError, match="unknown scene model 'tps'; expected one of auto, local, affine"):
        SceneConfig(model="tps")
    with pytest.raises(InputError, match="tie-point spacing must be at least 64 pixels, got 10"):
        SceneConfig(spacing=10)
    res = run("register", DEMO_OPTICAL, DEMO_SAR, "-o", "/tmp/never", "--chip", "--model", "local")
    assert res.exit_code == 2 and "--model local is a scene model: drop --chip" in res.output


def test_match_on_a_scene_gives_its_window_matches_in_sar_pixels(scene_case, tmp_path):
    res = run("-q", "match", scene_case["optical"], scene_case["sar"], "--scene", "-o", tmp_path / "m.json")
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "m.json").read_text())
    k0, k1, kept = np.array(d["keypoints0"]), np.array(d["keypoints1"]), np.array(d["inlier"], bool)
    assert len(k0) == len(k1) == len(d["confidence"]) and kept.sum() > 200
    case = SceneCase.from_dict(json.loads(open(scene_case["case"]).read()))
    err = np.linalg.norm(k1 - case.truth(k0), axis=1)
    # single CFOG matches on 10 m Sentinel-1 scatter by 1-3 px (the windows' medians are what the model uses)
    assert np.median(err[kept]) < 2.0 and np.percentile(err[kept], 95) < 4.5 and np.median(err[~kept]) > 3.0
    H = np.array(d["H"])  # the global stage: the ~40 px offset
    assert np.linalg.norm(H[:2, 2] - case.truth(np.zeros((1, 2)))[0]) < 8


def test_progress_bars_go_to_stderr_and_are_silent_with_quiet(capsys):
    import logging

    from osreg.cli.common import progress_bars

    root = logging.getLogger()
    old = root.level
    try:
        root.setLevel(logging.INFO)
        bar = progress_bars("tie points", 4)
        bar.update(4)
        bar.close()
        err = capsys.readouterr()
        assert "tie points: 100%" in err.err and "4/4" in err.err and err.out == ""
        root.setLevel(logging.WARNING)  # osreg -q
        bar = progress_bars("tie points", 4)
        bar.update(4)
        bar.close()
        assert capsys.readouterr().err == ""
    finally:
        root.setLevel(old)


def test_fuse_writes_the_optical_bands_and_the_registered_sar_as_one_stack(tmp_path):
    out = tmp_path / "out"
    res = run("-q", "register", DEMO_OPTICAL, DEMO_SAR, "-o", out, "--fuse")
    assert res.exit_code == 0, res.output
    with rasterio.open(out / "fused.tif") as f, rasterio.open(DEMO_OPTICAL) as o, \
            rasterio.open(out / "registered_sar.tif") as r:
        assert f.count == 4 and f.descriptions == ("B4 red", "B3 green", "B2 blue", "VH")
        assert f.crs == o.crs and f.transform == o.transform and f.dtypes[0] == "float32"
        assert np.array_equal(f.read([1, 2, 3]), o.read().astype(np.float32))
        assert np.array_equal(f.read(4), r.read(1), equal_nan=True)
        assert f.tags()["OSREG_RUN_ID"] == json.loads((out / "report.json").read_text())["run_id"]

"""Many pairs on a real local Dask cluster: one folder per pair, a summary, retries, skips, equal results."""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, textured, write_tif

from osreg.batch import read_pairs, register_pair, run_batch
from osreg.cli import main
from osreg.errors import InputError
from osreg.pipeline import make_config
from osreg.scene import SceneConfig

distributed = pytest.importorskip("distributed")  # a dependency; the import is checked, never skipped in CI


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def write_pairs(tmp_path, rows, header=("optical", "sar", "name")):
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def summary(out):
    with open(out / "summary.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_pairs_file_is_checked(tmp_path):
    with pytest.raises(InputError, match="has no column 'sar'; expected columns optical,sar\\[,name\\], got optical,b"):
        read_pairs(write_pairs(tmp_path, [["a", "b"]], header=("optical", "b")), tmp_path / "o")
    with pytest.raises(InputError, match="line 3: pair name 'x' already used on line 2"):
        read_pairs(write_pairs(tmp_path, [["a.tif", "b.tif", "x"], ["c.tif", "d.tif", "x"]]), tmp_path / "o")
    tasks = read_pairs(write_pairs(tmp_path, [["sub/a.tif", "/abs/b.tif", ""]]), tmp_path / "o")
    assert tasks[0].name == "a" and tasks[0].optical == str(tmp_path / "sub" / "a.tif")
    assert tasks[0].sar == "/abs/b.tif" and tasks[0].out_dir == str(tmp_path / "o" / "a")


def test_batch_survives_a_dead_worker_and_equals_a_sequential_run(tmp_path, client):
    """One worker is killed in the middle of a pair: that pair is rescheduled, the others are unaffected, a bad
    pair is an error row; results equal a run in turn in this process; a re-run skips finished pairs."""
    rows = [[str(DEMO_OPTICAL), str(DEMO_SAR), f"p{i}"] for i in range(4)] + [["missing.tif", str(DEMO_SAR), "bad"]]
    tasks = read_pairs(write_pairs(tmp_path, rows), tmp_path / "dask")
    marker = tmp_path / "killed-once"

    def dies_once(task, *args):
        if task.name == "p1" and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task
        return register_pair(task, *args)

    cfg = make_config("cfog")
    got = run_batch(tasks, tmp_path / "dask", cfg, SceneConfig(), client=client, runner=dies_once)
    assert marker.exists()
    assert [r["status"] for r in got] == ["good"] * 4 + ["error"]
    assert "optical image not found" in got[-1]["message"]
    table = summary(tmp_path / "dask")
    assert set(table) == {"p0", "p1", "p2", "p3", "bad"} and table["p1"]["status"] == "good"
    seq = run_batch(read_pairs(write_pairs(tmp_path, rows[:2]), tmp_path / "seq"), tmp_path / "seq", cfg)
    for name in ("p0", "p1"):
        a = json.loads((tmp_path / "dask" / name / "report.json").read_text())
        b = json.loads((tmp_path / "seq" / name / "report.json").read_text())
        assert np.array_equal(a["transform"]["optical_px_to_sar_px"], b["transform"]["optical_px_to_sar_px"])
        assert a["matches"] == b["matches"] and seq[int(name[1])]["status"] == "good"
    again = run_batch(tasks, tmp_path / "dask", cfg, client=client, runner=dies_once)
    assert [r["status"] for r in again] == ["done before"] * 4 + ["error"]


def test_the_summary_names_the_checks_a_refused_pair_failed(tmp_path):
    with rasterio.open(DEMO_SAR) as s:
        crs, t = s.crs, s.transform
    other = write_tif(tmp_path / "unrelated.tif", (textured((384, 384), seed=7) * 255).astype(np.uint8), crs, t)
    tasks = read_pairs(write_pairs(tmp_path, [[str(DEMO_OPTICAL), str(other), "u"]]), tmp_path / "out")
    (row,) = run_batch(tasks, tmp_path / "out", make_config("cfog[global_escalate_side=0]"))
    report = json.loads((tmp_path / "out" / "u" / "report.json").read_text())
    assert row["status"] == "failed" and report["failed_checks"]
    assert summary(tmp_path / "out")["u"]["failed_checks"] == ";".join(report["failed_checks"])


def test_batch_command_on_a_local_cluster(tmp_path):
    pairs = write_pairs(tmp_path, [[str(DEMO_OPTICAL), str(DEMO_SAR), "a"], [str(DEMO_OPTICAL), str(DEMO_SAR), "b"]])
    res = CliRunner().invoke(main, ["-q", "batch", str(pairs), "-o", str(tmp_path / "out"), "--workers", "2"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1]) == {"summary": str(tmp_path / "out" / "summary.csv"),
                                                                "pairs": 2, "good": 2}
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir())[0] == "displacement_field.tif"
    res = CliRunner().invoke(main, ["-q", "batch", str(pairs), "-o", str(tmp_path / "out"), "--workers", "0"],
                             catch_exceptions=False)
    assert json.loads(res.output.strip().splitlines()[-1])["done before"] == 2
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):  # Dask's setting, as a user would set it
        t = time.perf_counter()
        res = CliRunner().invoke(main, ["batch", str(pairs), "-o", str(tmp_path / "x"), "--scheduler",
                                        "tcp://127.0.0.1:1"], catch_exceptions=False)
    assert res.exit_code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in res.output
    assert time.perf_counter() - t < 15  # gave up after Dask's configured timeout, not a fixed 20 or 30 s


def test_scene_windows_on_the_cluster_equal_a_run_here(tmp_path, client):
    from test_scene import demo_tiles

    from osreg.eval.scene_case import SceneCase, write_scene_case
    from osreg.scene.register import register_scene

    files = write_scene_case(demo_tiles(), SceneCase.draw(1536, 30.0, 4.0, seed=5), tmp_path / "case")
    scene = SceneConfig(spacing=384, chunk=4)
    here = register_scene(files["optical"], files["sar"], make_config("cfog"), scene)
    there = register_scene(files["optical"], files["sar"], make_config("cfog"), scene, client=client)
    assert len(here.shifts) >= 9 and np.array_equal(here.matches.keypoints1, there.matches.keypoints1)
    assert np.array_equal(here.displacement.dx, there.displacement.dx)

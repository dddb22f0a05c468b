"""Outputs as a set: a run leaves a complete, consistent set of outputs or none of its own; output locations are
checked before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, textured, write_tif

from osreg.cli import main


def run(*args):
    return CliRunner().invoke(main, ["-q", *(str(a) for a in args)], catch_exceptions=False)


def leftovers(folder):
    """Hidden working folders and temporary files osreg could have left beside or in ``folder``."""
    beside = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.osreg-")]
    inside = [p.name for p in folder.iterdir() if ".part" in p.name or p.name.startswith(".")] \
        if folder.exists() else []
    return beside + inside


def run_id_of_image(out):
    with rasterio.open(out / "registered_sar.tif") as ds:
        return ds.tags()["OSREG_RUN_ID"]


def check_consistent_set(out):
    """The invariant of an output folder: a report, and an image (with its quick-look) exactly when the report says
    good, from the same run."""
    report = json.loads((out / "report.json").read_text())
    good = report["verdict"] == "good"
    assert (out / "registered_sar.tif").exists() == good == (out / "quicklook.png").exists()
    assert (out / "tiepoints.csv").exists() and (out / "tiepoints.geojson").exists()
    if good:
        assert run_id_of_image(out) == report["run_id"]
    return report


@pytest.fixture
def unrelated_sar(tmp_path):
    with rasterio.open(DEMO_SAR) as s:
        crs, t = s.crs, s.transform
    return write_tif(tmp_path / "unrelated.tif", (textured((384, 384), seed=7) * 255).astype(np.uint8), crs, t)


def test_failed_rerun_removes_the_earlier_image_and_quicklook(tmp_path, unrelated_sar):
    out = tmp_path / "out"
    assert run("register", DEMO_OPTICAL, DEMO_SAR, "-o", out).exit_code == 0
    assert (out / "registered_sar.tif").exists()
    # no escalation of the search on a pair nothing registers: it would only add time here
    res = run("register", DEMO_OPTICAL, unrelated_sar, "-o", out, "--overwrite", "--method",
              "cfog[global_escalate_side=0]")
    assert res.exit_code == 3
    report = check_consistent_set(out)
    assert report["verdict"] == "failed"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "tiepoints.csv", "tiepoints.geojson"]
    assert leftovers(out) == []


def test_an_interrupted_write_leaves_the_earlier_set_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run("register", DEMO_OPTICAL, DEMO_SAR, "-o", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import osreg.export

    def interrupted(*args, **kwargs):  # Ctrl-C after the new image was written, before the report
        raise KeyboardInterrupt

    monkeypatch.setattr(osreg.export, "build_report", interrupted)
    res = run("register", DEMO_OPTICAL, DEMO_SAR, "-o", out, "--overwrite")
    assert res.exit_code == 1 and "Aborted" in res.output  # click's answer to Ctrl-C
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(out) == []


@pytest.mark.slow
def test_a_kill_at_any_moment_never_mixes_two_runs(tmp_path):
    """SIGKILL (and SIGTERM) at moments spread over a whole run of the console script: the folder always holds one
    consistent set, the old one or the new one; stale working folders of killed runs are removed by the next run."""
    out = tmp_path / "out"
    base = [sys.executable, "-c", "from osreg.cli import run; run()", "-q", "register", str(DEMO_OPTICAL),
            str(DEMO_SAR), "-o", str(out)]
    assert subprocess.run(base, capture_output=True).returncode == 0
    first = check_consistent_set(out)["run_id"]
    t0 = time.perf_counter()
    assert subprocess.run([*base, "--overwrite"], capture_output=True).returncode == 0
    duration = time.perf_counter() - t0
    ids = {first, check_consistent_set(out)["run_id"]}

    def killed_run(k, delay):
        proc = subprocess.Popen([*base, "--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM if k % 3 == 2 else signal.SIGKILL)
        proc.wait()
        report = check_consistent_set(out)
        assert not [p for p in out.iterdir() if ".part" in p.name or p.name.startswith(".")]
        return report["run_id"]

    for k, frac in enumerate(np.linspace(0.3, 1.0, 7)):
        ids.add(killed_run(k, duration * frac))
    # Run times vary with the machine's load: later kills until one lands after a run finished writing, so the
    # moments above are known to have covered the whole run (old set before, new set after).
    for k, frac in enumerate((1.25, 1.6, 2.2, 3.0, 5.0)):
        if len(ids) >= 3:
            break
        ids.add(killed_run(k, duration * frac))
    assert len(ids) >= 3, "no run finished writing even at five times the calibrated duration"
    assert subprocess.run([*base, "--overwrite"], capture_output=True).returncode == 0
    check_consistent_set(out)
    assert leftovers(out) == []


@pytest.mark.parametrize("case", ["under_file", "folder_is_file", "foreign_files", "match_out_folder", "unwritable",
                                  "current_folder"])
def test_output_location_is_checked_before_any_work(tmp_path, monkeypatch, case):
    import osreg.pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("the registration ran before the output location was checked")

    monkeypatch.setattr(osreg.pipeline, "run_registration", no_work)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    command = "register"
    if case == "under_file":
        out = blocker / "out"
        expect = f"Error: cannot create output folder {out}: {blocker} is a file, not a folder"
    elif case == "folder_is_file":
        out = blocker
        expect = f"Error: output folder {out} is a file; give the path of a folder"
    elif case == "foreign_files":
        out = tmp_path
        expect = (f"Error: output folder {out} holds files osreg did not write (file.txt); its outputs are replaced "
                  "as one set, so give a new or empty folder")
    elif case == "current_folder":
        empty = tmp_path / "empty"
        empty.mkdir()
        monkeypatch.chdir(empty)
        out = "."
        expect = ("Error: output folder . is the current folder or holds it; its outputs replace the folder as a "
                  "whole, so give a subfolder (e.g. -o out)")
    elif case == "match_out_folder":
        command, out = "match", tmp_path
        expect = f"Error: output file {out} is a folder; give the path of a file to write"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        out = locked / "out"
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
        expect = f"Error: cannot write output folder {out}: folder {locked} is not writable"
    res = run(command, DEMO_OPTICAL, DEMO_SAR, "-o", out)
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == expect
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder; the permission check is tested above "
                                              "with os.access patched")
def test_output_in_a_read_only_folder(tmp_path):  # pragma: no cover - runs for non-root users
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        res = run("register", DEMO_OPTICAL, DEMO_SAR, "-o", locked / "out")
        assert res.exit_code == 2 and "is not writable" in res.stderr
    finally:
        locked.chmod(0o755)


def test_benchmark_refuses_a_report_folder_under_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    res = run("benchmark", "--data", tmp_path, "--methods", "sift", "-o", blocker / "rep")
    assert res.exit_code == 2
    expect = f"Error: cannot create output folder {blocker / 'rep'}: {blocker} is a file, not a folder"
    assert res.stderr.strip() == expect

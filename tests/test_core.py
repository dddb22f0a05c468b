"""One registration core for every entry point, and a light start for the methods that need no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR

from osreg.cli import main


def test_register_match_and_benchmark_run_the_same_core(monkeypatch, shared_data, tmp_path):
    """register, match and the benchmark all go through osreg.core.register_arrays, with the CLI's verdict config."""
    import osreg.pipeline
    from osreg.eval.benchmark import BenchmarkConfig, _init_worker, _run_pair
    from osreg.pipeline import RegisterConfig

    calls = []
    real = osreg.core.register_arrays

    def counting(*args, **kwargs):
        calls.append(args[4].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(osreg.core, "register_arrays", counting)
    monkeypatch.setattr(osreg.pipeline, "register_arrays", counting)
    runner = CliRunner()
    assert runner.invoke(main, ["-q", "register", str(DEMO_OPTICAL), str(DEMO_SAR), "-o", str(tmp_path / "o")]
                         ).exit_code == 0
    assert runner.invoke(main, ["-q", "match", str(DEMO_OPTICAL), str(DEMO_SAR), "--method", "sift"]).exit_code == 0
    # cfog without the search's escalation (nothing registers this pair; the second search would only add time)
    spec = "cfog[global_escalate_side=0]"
    cfg = BenchmarkConfig(data_dir=str(shared_data), datasets=("osmnet_zhanghan9718",), methods=(spec,), threads=1)
    _init_worker(cfg, spec)  # what each benchmark worker process runs, here in this process
    row = _run_pair(cfg, "osmnet_zhanghan9718", "pair1", "aligned")
    assert calls == ["cfog", "sift", "cfog"]
    assert row["verdict"] in ("good", "failed") and row["time_s"] > 0
    reg = cfg.register_config("cfog")
    assert reg.verdict == RegisterConfig().verdict  # the CLI's verdict, not one of the benchmark's own
    assert (reg.geometry.model, reg.geometry.seed, reg.geometry.threshold_px) == ("affine", 0, 3.0)


LIGHT = """
import sys
from osreg.cli import main
try:
    main({args}, standalone_mode=False)
finally:
    print(sorted(m for m in ("torch", "kornia", "transformers") if m in sys.modules))
"""


@pytest.mark.parametrize("method,command", [("cfog", "register"), ("sift", "match"), ("rift", "match")])
def test_methods_without_torch_never_import_it(tmp_path, method, command):
    out = ["-o", str(tmp_path / "o")] if command == "register" else []
    args = ["-q", command, str(DEMO_OPTICAL), str(DEMO_SAR), "--method", method, *out]
    res = subprocess.run([sys.executable, "-c", LIGHT.format(args=json.dumps(args))], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"

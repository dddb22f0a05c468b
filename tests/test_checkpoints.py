"""No code from data: every checkpoint a user can point to is read with weights_only=True, and a crafted file is
refused before any of it runs."""

from __future__ import annotations

import pathlib

import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_train_pairs

from osreg.cli import main
from osreg.errors import CheckpointError


class Payload:
    """An object whose unpickling calls a function: here it only creates a marker file, an attacker's would do
    anything."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "crafted.pt"
    torch.save({"model": Payload(marker), "aggregator": Payload(marker), "model_config": {}, "optimizer": {},
                "step": 0, "history": []}, path)
    # the file really runs code when loaded the unsafe way (the check below would be empty otherwise)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


MESSAGE = r"crafted.pt is not a {} checkpoint: it holds objects other than tensors and plain data, which osreg refuses"


def test_matcher_weights_are_read_safely(crafted):
    from osreg.matchers import create_matcher
    from osreg.matchers.promptmid import load_promptmid
    from osreg.matchers.tar import load_tar

    path, marker = crafted
    with pytest.raises(CheckpointError, match=MESSAGE.format("TAR")):
        load_tar(path)
    with pytest.raises(CheckpointError, match=MESSAGE.format("TAR")):
        create_matcher("tar", weights=str(path))
    with pytest.raises(CheckpointError, match=MESSAGE.format("PromptMID")):
        load_promptmid(path)
    assert not marker.exists()


def test_training_checkpoints_are_read_safely(crafted, tmp_path):
    from osreg.matchers.tar.config import PRESETS
    from osreg.matchers.tar.model import TARModel
    from osreg.train.common import TrainConfig, export_weights
    from osreg.train.data import AugmentConfig
    from osreg.train.train_tar import initialise, train

    path, marker = crafted
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(path.read_bytes())
    cfg = TrainConfig(preset="tiny", steps=2, batch=1, augment=AugmentConfig(crop=96))
    pairs = synthetic_train_pairs(2)
    with pytest.raises(CheckpointError, match=MESSAGE.format("training").replace("crafted", "last")):
        train(None, str(run), cfg, resume=True, threads=1, pairs=(pairs, pairs))
    with pytest.raises(CheckpointError, match=MESSAGE.format("TAR")):
        initialise(TARModel(PRESETS["tiny"]), path)
    with pytest.raises(CheckpointError, match=MESSAGE.format("training")):
        export_weights(path, tmp_path / "w.pt", "cmd", "model", lambda d: TARModel(PRESETS["tiny"]))
    assert not marker.exists()


def test_cli_refuses_a_crafted_checkpoint_with_exit_2(crafted, tmp_path):
    from conftest import DEMO_OPTICAL, DEMO_SAR

    path, marker = crafted
    runner = CliRunner()
    res = runner.invoke(main, ["-q", "match", str(DEMO_OPTICAL), str(DEMO_SAR), "--method", f"tar[weights={path}]"])
    assert res.exit_code == 2 and "is not a TAR checkpoint: it holds objects other than tensors" in res.stderr
    res = runner.invoke(main, ["-q", "train", "--data", str(tmp_path), "-o", str(tmp_path / "r"), "--init", str(path)])
    assert res.exit_code == 2 and "is not a TAR checkpoint: it holds objects other than tensors" in res.stderr
    run = tmp_path / "r2"
    run.mkdir()
    (run / "last.pt").write_bytes(path.read_bytes())
    res = runner.invoke(main, ["-q", "train", "--data", str(tmp_path), "-o", str(run), "--resume"])
    assert res.exit_code == 2 and "last.pt is not a training checkpoint: it holds objects" in res.stderr
    assert not marker.exists()

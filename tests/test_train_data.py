"""Training pairs: the ground-truth transform of a sample is exact, and pairs that osreg registered itself train
too (only accepted ones, coarse loss only, drawn for their share of the samples)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, textured

from osreg.cli import main
from osreg.errors import InputError
from osreg.geometry import rectify
from osreg.io.raster import read_raster
from osreg.preprocess import prepare_optical
from osreg.train.common import TrainConfig
from osreg.train.data import AugmentConfig, TrainPair, add_registered, load_registered, make_batch, sample


def similarity(deg: float, s: float, t: tuple[float, float]) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[s * np.cos(a), -s * np.sin(a), t[0]], [s * np.sin(a), s * np.cos(a), t[1]], [0, 0, 1.0]])


def test_a_samples_transform_maps_its_optical_crop_onto_its_sar_crop_under_the_pairs_ground_truth():
    opt = textured((300, 300), seed=3)
    to_sar = similarity(12.0, 1.1, (-20.0, 15.0))  # optical px -> SAR px
    sar = cv2.warpAffine(opt, to_sar[:2], (340, 340), flags=cv2.INTER_LINEAR)  # sar(to_sar p) = opt(p)
    valid = cv2.warpAffine(np.ones_like(opt, np.uint8), to_sar[:2], (340, 340), flags=cv2.INTER_NEAREST) > 0
    pair = TrainPair("t", opt, sar, to_sar, False, valid)
    rng = np.random.default_rng(0)
    one_px = np.array([[1, 0, 1.0], [0, 1, 0], [0, 0, 1]])
    for _ in range(4):
        crop, sar_crop, sar_valid, H, fine_ok = sample(pair, rng, AugmentConfig(crop=128, max_rotation=30))
        assert not fine_ok
        # the SAR crop brought back by H is the optical crop (up to two bilinear resamplings and the optical's
        # gamma jitter: correlation 0.998-0.9996 measured); brought back 1 px off, it correlates at 0.97-0.98
        for shift, lo, hi in ((np.eye(3), 0.995, 1.0), (one_px, 0.9, 0.985)):
            back, back_valid = rectify(sar_crop, sar_valid, H @ shift, crop.shape)
            inner = cv2.erode(back_valid.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            assert inner.mean() > 0.3
            assert lo < np.corrcoef(back[inner], crop[inner])[0, 1] < hi
    # the SAR's invalid area stays invalid in the crops: nothing beyond the SAR's own validity is counted valid
    nodata = TrainPair("t", opt, sar, to_sar, False, np.zeros_like(valid))
    assert not sample(nodata, rng, AugmentConfig(crop=128))[2].any()


@pytest.fixture(scope="module")
def registered_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "demo"
    res = CliRunner().invoke(main, ["-q", "register", str(DEMO_OPTICAL), str(DEMO_SAR), "-o", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out / "report.json"


def test_a_registered_pair_trains_with_its_registration_as_ground_truth(registered_demo, tmp_path):
    report = json.loads(registered_demo.read_text())
    (pair,) = load_registered([str(registered_demo)], 256)
    assert pair.name == "demo" and not pair.fine_ok  # osreg's own estimate never reaches the fine loss
    np.testing.assert_allclose(pair.to_sar, report["transform"]["optical_px_to_sar_px"])
    assert pair.optical.shape == tuple(report["inputs"]["optical"]["size"][::-1])
    assert pair.sar_valid.shape == pair.sar.shape == tuple(report["inputs"]["sar"]["size"][::-1])
    assert pair.optical.dtype == pair.sar.dtype == np.float32 and pair.optical.max() <= 1.0
    # the bands the registration chose are the bands that train
    green = tmp_path / "green.json"
    green.write_text(json.dumps({**report, "config": {**report["config"], "optical_bands": [2]}}))
    (one_band,) = load_registered([str(green)], 256)
    expected = prepare_optical(read_raster(DEMO_OPTICAL, "optical", [2]))
    np.testing.assert_array_equal(one_band.optical, expected)
    assert np.abs(one_band.optical - pair.optical).mean() > 0.01
    with pytest.raises(InputError, match=r"the optical image is \d+ x \d+ px, smaller than the 4096 px training crop"):
        load_registered([str(registered_demo)], 4096)


def test_refused_registrations_and_broken_reports_are_not_ground_truth(tmp_path, registered_demo):
    report = json.loads(registered_demo.read_text())
    refused = tmp_path / "refused.json"
    refused.write_text(json.dumps({**report, "verdict": "failed", "reasons": ["too few inliers: 7 (at least 15 "
                                                                               "needed)"]}))
    with pytest.raises(InputError, match=r"the verdict refused this registration \(too few inliers: 7 \(at least 15 "
                                         r"needed\)\); only accepted registrations can serve as ground truth"):
        load_registered([str(refused)], 256)
    moved = tmp_path / "moved.json"
    report["inputs"]["sar"]["path"] = str(tmp_path / "gone.tif")
    moved.write_text(json.dumps(report))
    with pytest.raises(InputError, match=r"names .*gone\.tif, which does not exist"):
        load_registered([str(moved)], 256)
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps({**json.loads(registered_demo.read_text()), "scene": {"windows": 12}}))
    with pytest.raises(InputError, match="is a scene registration: its answer is a displacement field"):
        load_registered([str(scene)], 256)
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(InputError, match="is not a readable osreg report.json"):
        load_registered([str(broken)], 256)


def test_registered_pairs_are_drawn_for_their_share_of_the_samples():
    def pair(name, size, value, weight=1.0):
        img = np.full((size, size), value, np.float32)
        return TrainPair(name, img, img, np.eye(3), True, None, weight)

    volkov = [pair(f"v{k}", 64, 0.0) for k in range(6)]
    registered = [pair("big", 96, 1.0, 96.0 * 96), pair("small", 64, 1.0, 64.0 * 64)]
    mixed = add_registered(volkov, registered, 0.6)
    w = np.array([p.weight for p in mixed])
    assert w[6:].sum() / w.sum() == pytest.approx(0.6)
    assert w[6] / w[7] == pytest.approx(96.0 ** 2 / 64 ** 2)  # in proportion to their optical area
    assert [p.weight for p in mixed[:6]] == [1.0] * 6 and add_registered(volkov, [], 0.6) == volkov
    # the optical crops of registered pairs are all 1, those of the others all 0; drawn without weights, 2 of 8
    # pairs would make 0.25
    opt = make_batch(mixed, np.random.default_rng(0), 400, AugmentConfig(crop=64, max_rotation=0))[0]
    assert 0.52 < float(opt.mean()) < 0.68


def test_the_registered_share_is_checked_and_cstf_refuses_registered_pairs(tmp_path):
    with pytest.raises(InputError, match=r"registered_share must be in \(0, 1\), got 1.0"):
        TrainConfig(registered_share=1.0)
    from osreg.train.train_cstf import train

    cfg = TrainConfig(preset="tiny", registered=("report.json",))
    with pytest.raises(InputError, match="pairs registered by osreg carry its own estimate and cannot train it"):
        train(None, str(tmp_path / "run"), cfg, threads=1, pairs=([], []))


def test_osreg_train_refuses_a_refused_registration(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"verdict": "failed", "reasons": ["no overlap"],
                                  "transform": {"optical_px_to_sar_px": np.eye(3).tolist()},
                                  "inputs": {"optical": {"path": "o.tif"}, "sar": {"path": "s.tif"}}}))
    res = CliRunner().invoke(main, ["-q", "train", "--method", "tar", "--data", str(tmp_path / "data"), "-o",
                                    str(tmp_path / "run"), "--registered", str(report), "--steps", "1"])
    assert res.exit_code != 0
    assert "the verdict refused this registration (no overlap)" in res.output
    assert not (tmp_path / "run" / "last.pt").exists()

"""CSTF: keypoints, correspondence maps, classification head, checkpoints, training, the shipped weights."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR, textured

from osreg.cli import main
from osreg.errors import CheckpointError, InputError
from osreg.geometry import translation
from osreg.matchers import build_matcher, method_setup
from osreg.matchers.cstf import model as cstf_model
from osreg.matchers.cstf.config import PRESETS, CSTFConfig
from osreg.matchers.cstf.keypoints import detect
from osreg.matchers.cstf.matcher import load_cstf, match_pair
from osreg.matchers.cstf.model import CSTFNet, decode
from osreg.pipeline import read_inputs
from osreg.preprocess import prepare_optical, prepare_sar
from osreg.train.common import TrainConfig, lr_factor
from osreg.train.data import TrainPair


def demo_images():
    o, s = read_inputs(str(DEMO_OPTICAL), str(DEMO_SAR))
    return prepare_optical(o), prepare_sar(s)


def tiny_checkpoint(path, cfg: CSTFConfig = PRESETS["tiny"], seed: int = 0):
    torch.manual_seed(seed)
    model = CSTFNet(cfg)
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "step": 0}, path)
    return path


def test_keypoints_have_scales_orientations_and_follow_a_zoom():
    img = textured((320, 320), seed=2)
    kp = detect(img, None, 200)
    assert 100 <= len(kp) <= 200 and kp.xy.shape == (len(kp), 2)
    assert np.all((kp.angle >= 0) & (kp.angle < np.pi)) and len(np.unique(kp.scale)) >= 3
    import cv2

    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    kb = detect(big, None, 400)
    coarse = kp.scale >= 3.0  # structures the zoomed image still has at twice the scale
    from scipy.spatial import cKDTree

    d, j = cKDTree(kb.xy / 2).query(kp.xy[coarse])
    close = d < 2.0
    assert close.mean() > 0.4  # repeatable under a zoom of 2 ...
    ratio = kb.scale[j[close]] / kp.scale[coarse][close]
    assert 1.5 < np.median(ratio) < 2.6  # ... with the scale following it
    mask = np.zeros((320, 320), bool)
    mask[:, :160] = True
    assert np.all(detect(img, mask, 200).xy[:, 0] < 160)
    assert len(detect(np.zeros((100, 100), np.float32), None, 50)) == 0


def test_correspondence_maps_and_classes_have_the_documented_shapes(monkeypatch):
    cfg = PRESETS["tiny"]
    model = CSTFNet(cfg).eval()
    x = torch.rand(1, 1 + cfg.n_orientations, 96, 128)
    xy = torch.tensor([[40.0, 50.0], [60.0, 30.0], [100.0, 70.0]])
    prior = torch.zeros(3, cfg.cells, cfg.cells)
    with torch.no_grad():
        f0, f1 = model.encoder0(x), model.encoder1(x)
        assert f0.shape[2:] == (48, 64) and torch.allclose(f0.norm(dim=1), torch.ones(1, 48, 64), atol=1e-4)
        assert f0.shape[1] == cfg.dim + cfg.n_orientations  # the learned part and the fixed CFOG-like part
        maps = model.correspondence_maps(f0, f1, xy, xy, prior)
        assert maps.shape == (3, 5, cfg.cells, cfg.cells)  # four regions (template quadrants) and the SAR keypoints
        # the four regions add up to the whole template's correlation: at the true shift of an image with itself
        # the summed map peaks at the centre
        f = model.encoder0(x)
        same = model.correspondence_maps(f, f, xy, xy, prior)[:, :4].sum(1).flatten(1)
        assert same.argmax(1).tolist() == [cfg.cells * cfg.cells // 2] * 3
        logits = model.head(maps)
        assert logits.shape == (3, cfg.cells * cfg.cells + 1)
        # computed in chunks of keypoints (a cache choice), the maps are the same, each with its own keypoint's prior
        prior_k = torch.arange(3.0)[:, None, None].expand(3, cfg.cells, cfg.cells)
        whole = model.correspondence_maps(f0, f1, xy, xy, prior_k)
        monkeypatch.setattr(cstf_model, "MAPS_CHUNK", 2)
        chunked = model.correspondence_maps(f0, f1, xy, xy, prior_k)
        assert torch.allclose(chunked, whole, atol=1e-6) and chunked[:, 4, 0, 0].tolist() == [0.0, 1.0, 2.0]
        assert not torch.allclose(chunked[0], chunked[1])  # and not one keypoint's maps repeated
    # decoding: a peaked class gives its displacement; the last class is "no match"
    s = cfg.cells
    lg = torch.full((2, s * s + 1), -20.0)
    lg[0, (s // 2 + 2) * s + (s // 2 - 3)] = 20.0  # 2 cells down, 3 cells left
    lg[1, -1] = 20.0
    disp, mass, is_match = decode(lg, s, cfg.stride)
    assert torch.allclose(disp[0], torch.tensor([-6.0, 4.0])) and mass[0] > 0.99
    assert is_match.tolist() == [True, False]


def test_the_sar_keypoint_channel_follows_its_definition():
    """The prior channel: per optical keypoint and candidate, the sum over nearby SAR keypoints of a Gaussian of
    their distance, weighted by scale agreement (computed as a product of x and y Gaussians: checked against the
    definition, one candidate and one SAR keypoint at a time)."""
    from osreg.matchers.cstf.model import keypoint_prior

    rng = np.random.default_rng(3)
    xy0 = rng.uniform(20, 100, (6, 2))
    scale0 = rng.uniform(1.6, 6.0, 6)
    kp1 = np.vstack([rng.uniform(0, 120, (40, 2)), [[500.0, 500.0]]])  # the last one far from every keypoint
    s1 = rng.uniform(1.6, 6.0, 41)
    steps = np.arange(-6, 7, 2, dtype=np.float32)
    got = keypoint_prior(xy0, steps, scale0, kp1, s1)
    assert got.shape == (6, 7, 7) and got.dtype == np.float32
    want = np.zeros((6, 7, 7))
    for n in range(6):
        for i, dy in enumerate(steps):
            for j, dx in enumerate(steps):
                c = xy0[n] + [dx, dy]
                for q, sq in zip(kp1, s1):
                    if np.hypot(*(q - xy0[n])) <= (6 + 4.5) * np.sqrt(2):  # the reach: lattice + 3 sigma
                        want[n, i, j] += np.exp(-((c - q) ** 2).sum() / 4.5) * np.exp(-np.log(sq / scale0[n]) ** 2 / 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got.max() > 0.5  # some candidates do sit on SAR keypoints
    assert not keypoint_prior(xy0, steps, scale0, np.zeros((0, 2)), np.zeros(0)).any()


def test_the_detections_side_by_side_give_the_same_matches(tmp_path):
    """With more than one thread the two images' keypoints are detected concurrently: the same matches as one
    after the other."""
    import cv2

    model = load_cstf(tiny_checkpoint(tmp_path / "t.pt"))
    img0, img1 = demo_images()
    before = cv2.getNumThreads()
    try:
        runs = []
        for threads in (1, 2):
            cv2.setNumThreads(threads)
            runs.append(match_pair(model, img0, img1, None, None))
    finally:
        cv2.setNumThreads(before)
    one, two = runs
    assert len(one) > 0 and one.info == two.info
    np.testing.assert_array_equal(one.keypoints0, two.keypoints0)
    np.testing.assert_array_equal(one.keypoints1, two.keypoints1)


def test_no_keypoint_or_no_match_is_an_empty_result(tmp_path):
    model = load_cstf(tiny_checkpoint(tmp_path / "t.pt"))
    flat = np.zeros((128, 128), np.float32)
    res = match_pair(model, flat, flat, None, None)
    assert len(res) == 0 and res.keypoints0.shape == (0, 2) and res.info["keypoints0"] == 0
    img = textured((128, 128), seed=1)
    assert len(match_pair(model, img, img, None, None)) > 0
    ck = torch.load(tmp_path / "t.pt", weights_only=True)
    ck["model"]["head.none.bias"] = torch.tensor([1e4])  # a head that answers "no match" to everything
    torch.save(ck, tmp_path / "none.pt")
    res = match_pair(load_cstf(tmp_path / "none.pt"), img, img, None, None)
    assert len(res) == 0 and res.keypoints1.shape == (0, 2) and res.info["no_match"] == res.info["keypoints0"] > 0


def test_checkpoints_round_trip_strictly_and_refuse_what_is_not_one(tmp_path):
    path = tiny_checkpoint(tmp_path / "a.pt", seed=3)
    a, b = load_cstf(path), load_cstf(path)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    assert load_cstf(path, max_keypoints=7).cfg.max_keypoints == 7
    with pytest.raises(InputError, match="n_orientations"):
        load_cstf(path, n_orientations=4)  # would change the trained network
    ck = torch.load(path, weights_only=True)
    ck["model"].pop("head.score.weight")
    torch.save(ck, tmp_path / "b.pt")
    with pytest.raises(CheckpointError):
        load_cstf(tmp_path / "b.pt")

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "c.pt").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError):
        load_cstf(tmp_path / "c.pt")
    assert not (tmp_path / "pwned").exists()


def test_a_short_training_run_lowers_the_loss_and_resumes(tmp_path):
    from osreg.train.train_cstf import train

    opt, sar = demo_images()
    pairs = [TrainPair("demo", opt, sar, translation(0.0, 1.0), True)]
    cfg = TrainConfig(preset="tiny", steps=30, batch=1, lr=1e-2, checkpoint_every=15, val_every=15)
    last = train(None, str(tmp_path / "run"), cfg, threads=1, pairs=(pairs, pairs))
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    losses = [h["classification"] for h in hist]
    assert len(hist) == 30 and np.mean(losses[-10:]) < 0.85 * np.mean(losses[:5])  # measured 0.57
    assert "precision_3px" in hist[-1] and (tmp_path / "run" / "curves.png").exists()
    more = TrainConfig(preset="tiny", steps=33, batch=1, lr=1e-2, checkpoint_every=15, val_every=15)
    train(None, str(tmp_path / "run"), more, resume=True, threads=1, pairs=(pairs, pairs))
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in hist] == list(range(1, 34))
    # the schedule follows the step, over the run's steps at the time (30, then 33 once extended)
    want = [1e-2 * lr_factor(s, 30) for s in range(30)] + [1e-2 * lr_factor(s, 33) for s in range(30, 33)]
    assert [h["lr"] for h in hist] == pytest.approx(want, rel=1e-12)
    assert torch.load(last, weights_only=True)["step"] == 33


def test_both_encoders_learn_from_the_first_step():
    """The maps correlate the optical encoder's learned features with the SAR encoder's: initialised at exactly zero,
    each one's gradient is the other (zero) and neither would ever train (the step-800 weights of 2026-12-01 had
    learned parts of exactly zero). Every encoder layer must get a gradient from the first batch."""
    from osreg.train.train_cstf import compute_losses

    opt, sar = demo_images()
    o = torch.from_numpy(np.ascontiguousarray(opt[:192, :192]))[None, None].float()
    s = torch.from_numpy(np.ascontiguousarray(sar[:192, :192]))[None, None].float()
    torch.manual_seed(0)
    model = CSTFNet(PRESETS["tiny"]).train()
    lce, lsub, _ = compute_losses(model, o, s, torch.ones(1, 192, 192, dtype=torch.bool), torch.eye(3)[None],
                                  np.random.default_rng(0), negatives=False)
    (lce + 0.1 * lsub).backward()
    for enc in (model.encoder0, model.encoder1):
        grads = [p.grad for p in enc.net.parameters() if p.ndim > 1]
        assert all(g is not None and float(g.abs().max()) > 0 for g in grads)


def test_cstf_is_a_method_of_every_command(tmp_path):
    setup = method_setup("cstf", {"max_keypoints": "64"})
    assert setup.search == "auto" and dict(setup.options)["max_keypoints"] == 64
    matcher = build_matcher(method_setup("cstf"), georeferenced=True)
    assert matcher.name == "cstf"
    res = CliRunner().invoke(main, ["methods", "cstf"])
    assert "cstf: CSTF" in res.output and "max_keypoints (int) = 512" in res.output
    res = CliRunner().invoke(main, ["register", str(DEMO_OPTICAL), str(DEMO_SAR), "-o", str(tmp_path / "o"),
                                    "--method", "cstf[radius=abc]"])
    assert res.exit_code == 2 and "radius" in res.output


def test_shipped_weights_register_the_demo_pair_shifted():
    """The shipped network on the demo pair (aligned by the georeference to ~1.5 px) with a known extra shift of
    (7, -5) px inside its correspondence maps: the fitted transform recovers it within 1.5 px."""
    import cv2

    from osreg.geometry import GeometryConfig, estimate_transform

    opt, sar = demo_images()
    shifted = cv2.warpAffine(sar, np.float32([[1, 0, 7], [0, 1, -5]]), sar.shape[::-1], flags=cv2.INTER_LINEAR)
    model = load_cstf()
    # trained encoders: their learned parts moved well beyond the start (zero before the fix, |w| < 0.02 now)
    assert all(float(e.net[-1].weight.detach().abs().max()) > 0.05 for e in (model.encoder0, model.encoder1))
    res = match_pair(model, opt, shifted, None, None)
    est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="affine"))
    assert est.n_inliers >= 30
    from test_scene import DEMO_ARRAY_H

    # the demo arrays' own offset at the centre (about (-1, 0.5) px) plus the shift
    centre = np.array([[191.5, 191.5, 1.0]])
    moved = (est.H @ centre.T).ravel()[:2] - centre[0, :2]
    expected = (DEMO_ARRAY_H @ centre.T).ravel()[:2] - centre[0, :2] + [7.0, -5.0]
    assert np.linalg.norm(moved - expected) < 1.5, (moved, expected)
    # odd sides (a deformed SAR's canvas, a user's 1001 px image): the learned and fixed parts of the features keep
    # the same size (this crashed before), and the result is the same within the tolerance
    odd = match_pair(model, opt[:381, :383], shifted[:379, :377], None, None)
    est = estimate_transform(odd.keypoints0, odd.keypoints1, GeometryConfig(model="affine"))
    assert est.n_inliers >= 30
    moved = (est.H @ centre.T).ravel()[:2] - centre[0, :2]
    assert np.linalg.norm(moved - expected) < 1.5, (moved, expected)

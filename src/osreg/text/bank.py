"""The text descriptor bank: scene types (in the style of AID / NWPU-RESISC45) and land-cover classes, each
phrased with several templates, encoded once and cached with the encoder's identity.

The cached bank ships in the package (``osreg/text/data/bank_<encoder>.npz``), so inference never loads a
text encoder; :func:`rebuild_bank` rebuilds it
(``python -c "from osreg.text.bank import rebuild_bank; rebuild_bank()"``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osreg.errors import WeightsNotFoundError

logger = logging.getLogger(__name__)

SCENES = (
    "airport", "bare land", "baseball field", "beach", "bridge", "center", "church", "commercial area",
    "dense residential area", "desert", "farmland", "forest", "industrial area", "meadow",
    "medium residential area", "mountain", "park", "parking lot", "playground", "pond", "port",
    "railway station", "resort", "river", "school", "sparse residential area", "square", "stadium",
    "storage tanks", "viaduct", "harbor", "lake", "island", "wetland", "terraced field", "circular farmland",
    "freeway",
)
LAND_COVER = (
    "water", "trees", "grass", "crops", "built area", "bare ground", "snow and ice", "wetland vegetation",
    "shrubland", "road", "flooded vegetation", "rangeland",
)
TEMPLATES = (
    "a satellite image of {}.",
    "a SAR image of {}.",
    "an aerial photo of {}.",
    "a remote sensing image showing {}.",
    "an optical satellite view of {}.",
)


def bank_prompts() -> tuple[list[str], list[str]]:
    """Class names (scenes then land cover) and every prompt, class-major (``len(TEMPLATES)`` per class)."""
    names = list(SCENES) + list(LAND_COVER)
    prompts = [t.format(n) for n in names for t in TEMPLATES]
    return names, prompts


def bank_fingerprint() -> str:
    """Identity of the prompt set (changes when classes or templates change)."""
    _, prompts = bank_prompts()
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TextBank:
    """Encoded descriptors.

    Attributes:
        names: class names.
        embeddings: ``(len(names), D)`` float32, the L2-normalised mean over templates of each class.
        encoder: identity of the encoder that produced them (e.g. ``minilm-l6-v2``).
        fingerprint: :func:`bank_fingerprint` of the prompts.
    """

    names: tuple[str, ...]
    embeddings: np.ndarray
    encoder: str
    fingerprint: str

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


DATA_DIR = Path(__file__).resolve().parent / "data"


def bank_path(encoder: str, folder: Path = DATA_DIR) -> Path:
    return folder / f"bank_{encoder}.npz"


def build_bank(encoder) -> TextBank:
    """Encode every prompt with ``encoder`` (an object with ``name`` and ``encode(list[str]) -> (N, D)``)."""
    names, prompts = bank_prompts()
    emb = np.asarray(encoder.encode(prompts), dtype=np.float32)
    emb = emb.reshape(len(names), len(prompts) // len(names), -1).mean(axis=1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    return TextBank(tuple(names), emb, encoder.name, bank_fingerprint())


def save_bank(bank: TextBank, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, names=np.array(bank.names), embeddings=bank.embeddings, encoder=bank.encoder,
             fingerprint=bank.fingerprint)


def rebuild_bank(encoder: str = "minilm-l6-v2", checkpoint: str | Path | None = None,
                 folder: Path = DATA_DIR) -> Path:
    """Encode the prompts again with a frozen text encoder and save the bank where :func:`load_bank` looks.

    Args:
        encoder: "minilm-l6-v2" (the shipped all-MiniLM-L6-v2, needs the ``text`` extra) or "clip" (a CLIP-style
            text tower in the local folder ``checkpoint``).
        checkpoint: a local checkpoint folder (optional for MiniLM).
        folder: where to save the bank.

    Returns:
        the path of the saved bank.
    """
    from osreg.text.encoders import create_text_encoder

    enc = create_text_encoder("minilm" if encoder.startswith("minilm") else encoder, checkpoint)
    bank = build_bank(enc)
    path = bank_path(bank.encoder, folder)
    save_bank(bank, path)
    return path


def load_bank(encoder: str = "minilm-l6-v2", path: str | Path | None = None) -> TextBank:
    """Load a cached bank.

    Raises:
        WeightsNotFoundError: the cache is missing, or was made for other prompts or another encoder.
    """
    p = Path(path) if path else bank_path(encoder)
    if not p.is_file():
        raise WeightsNotFoundError(f"text bank for encoder '{encoder}' not found; looked at {p}. Build it with "
                                   f"osreg.text.bank.rebuild_bank('{encoder}')")
    z = np.load(p, allow_pickle=False)
    bank = TextBank(tuple(str(n) for n in z["names"]), z["embeddings"].astype(np.float32), str(z["encoder"]),
                    str(z["fingerprint"]))
    if bank.encoder != encoder or bank.fingerprint != bank_fingerprint():
        raise WeightsNotFoundError(
            f"text bank {p} was built by encoder '{bank.encoder}' for prompts {bank.fingerprint}; expected encoder "
            f"'{encoder}' and prompts {bank_fingerprint()}. Rebuild it with osreg.text.bank.rebuild_bank('{encoder}')"
        )
    return bank

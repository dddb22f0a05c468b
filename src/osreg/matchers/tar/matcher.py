"""TAR: text semantic assisted registration (MSFL + TAFE + CFDM) behind the matcher contract.

Large deformations: the network is trained with rotations up to +-50 degrees and scales 0.625-1.6; beyond that the
rotation/scale search stage (:mod:`osreg.matchers.search`) turns and rescales the SAR, scoring hypotheses with TAR's
coarse-only pass (:meth:`TARMatcher.coarse_match`). CFOG template matching on the pair aligned by TAR's fit then
sharpens it where it agrees (the template refinement stage, :mod:`osreg.matchers.template_refine`). Both stages are
on by default for TAR (the method registry, :mod:`osreg.matchers`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from osreg.matchers.base import Matcher
from osreg.matchers.checkpoint import load_state, read_trained
from osreg.matchers.dense import dense_matches
from osreg.matchers.search import pad_to_multiple
from osreg.matchers.tar.config import INFERENCE_FIELDS, TARConfig
from osreg.matchers.tar.model import TARModel
from osreg.types import MatchResult

logger = logging.getLogger(__name__)

SHIPPED = "matchers/tar/weights/tar.pt"


def load_tar(weights: str | Path | None = None, **overrides) -> TARModel:
    """Build TAR from a checkpoint (its saved config rebuilds the network; safe read, strict load).

    Args:
        weights: checkpoint file; the weights shipped in the package when None.
        **overrides: inference fields of TARConfig to change (``INFERENCE_FIELDS``: use_text, max_side, ...).

    Raises:
        WeightsNotFoundError: no file where it looked.
        CheckpointError: not a TAR checkpoint (or one holding objects other than tensors and plain data).
        InputError: an override would change the trained network.
    """
    path, ck, cfg = read_trained(weights, SHIPPED, "TAR", "model", TARConfig, INFERENCE_FIELDS, overrides)
    model = TARModel(cfg)
    load_state(model, ck["model"], path, "TAR")
    return model.eval()


class TARMatcher(Matcher):
    """``--method tar``. Options: ``weights`` (checkpoint path) and the inference fields of :class:`TARConfig`:
    ``use_text`` (False: the TAFE ablation), ``max_side``, ``coarse_threshold``, ..."""

    name = "tar"
    min_size = 64

    def __init__(self, weights: str | None = None, **overrides) -> None:
        self.model = load_tar(weights, **overrides)
        self.config: TARConfig = self.model.cfg
        from osreg.text import load_bank

        self.text = torch.from_numpy(load_bank(self.config.text_encoder).embeddings)

    @torch.inference_mode()
    def _run(self, img0, mask0, img1, mask1, fine: bool, features0: tuple | None = None) -> MatchResult:
        mask0 = np.ones(img0.shape, bool) if mask0 is None else mask0
        mask1 = np.ones(img1.shape, bool) if mask1 is None else mask1
        a0, m0 = pad_to_multiple(img0, mask0, 8)
        a1, m1 = pad_to_multiple(img1, mask1, 8)
        t0 = torch.from_numpy(a0)[None, None]
        t1 = torch.from_numpy(a1)[None, None]
        c0 = torch.nn.functional.avg_pool2d(torch.from_numpy(m0)[None, None].float(), 8)[:, 0] > 0.5
        c1 = torch.nn.functional.avg_pool2d(torch.from_numpy(m1)[None, None].float(), 8)[:, 0] > 0.5
        out = self.model(t0, t1, self.text, c0, c1, fine=fine, features0=features0, compact=True)

        def refine(b, i, j, xy0, xy1):
            return self.model.fine_refine(out, b, i, j, xy0, xy1)

        k0, k1, conf = dense_matches(out["conf"], tuple(out["coarse_shape0"].tolist()),
                                     tuple(out["coarse_shape1"].tolist()), self.config.coarse_threshold, img0.shape,
                                     img1.shape, refine=refine if fine else None, cells0=out["cells0"],
                                     cells1=out["cells1"])
        return MatchResult(k0, k1, conf, {"use_text": self.config.use_text})

    def describe_reference(self, image0, mask0):
        """MSFL's coarse features of the optical image (reused by every hypothesis of a search)."""
        with torch.inference_mode():
            return self.model.msfl(torch.from_numpy(pad_to_multiple(image0, mask0, 8)[0])[None, None], 0,
                                   fine=False)

    def coarse_match(self, image0, mask0, image1, mask1, reference=None) -> MatchResult:
        """Coarse matches only (no fine stage), from the optical ``reference`` features when given."""
        return self._run(image0, mask0, image1, mask1, fine=False, features0=reference)

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        return self._run(image0, mask0, image1, mask1, fine=True)

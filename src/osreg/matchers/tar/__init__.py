"""TAR: text semantic assisted registration (MSFL + TAFE + CFDM) behind the matcher contract.

Large deformations: the network is trained with rotations up to +-50 degrees and scales 0.625-1.6; at test time
the SAR is searched over rotations in 45-degree steps and a few scales (``TARConfig.rotations`` / ``scales``) at
a low working resolution, the hypothesis with the most geometrically consistent coarse matches rectifies the SAR,
and the full coarse-to-fine pass runs on it (:mod:`osreg.matchers.search`). CFOG template matching on the pair
aligned by TAR's matches then sharpens them where it agrees (:mod:`osreg.matchers.template_refine`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from osreg.errors import WeightsNotFoundError
from osreg.matchers.dense import dense_matches
from osreg.matchers.search import SearchMatcher, pad_to_multiple
from osreg.matchers.tar.config import TARConfig
from osreg.matchers.tar.model import TARModel
from osreg.types import MatchResult
from osreg.weights import resolve_weights

logger = logging.getLogger(__name__)

SHIPPED = "matchers/tar/weights/tar.pt"


def load_tar(weights: str | Path | None = None, **overrides) -> TARModel:
    """Build TAR from a checkpoint (its saved config rebuilds the network; strict load).

    Args:
        weights: checkpoint file; the weights shipped in the package when None.
        **overrides: inference fields of TARConfig to change (use_text, rotations, scales, ...).
    """
    path = resolve_weights(weights, "osreg", SHIPPED, "reinstall osreg (the weights ship inside the package)")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "model_config" not in ck or "model" not in ck:
        raise WeightsNotFoundError(f"{path} is not a TAR checkpoint (no model_config / model entries)")
    cfg = replace(TARConfig.from_dict(ck["model_config"]), **overrides)
    model = TARModel(cfg)
    model.load_state_dict(ck["model"], strict=True)
    return model.eval()


class TARMatcher(SearchMatcher):
    """``--method tar``. Options: ``weights`` (checkpoint path), ``use_text`` (False: the TAFE ablation),
    ``rotations``, ``scales`` (test-time search; ``rotations=(0,), scales=(1.0,)`` disables it),
    ``template_refine`` (False: TAR's own matches, without the CFOG template refinement)."""

    name = "tar"
    min_size = 64

    def __init__(self, weights: str | None = None, **overrides) -> None:
        self.model = load_tar(weights, **overrides)
        self.cfg = self.model.cfg
        self.max_side = self.cfg.max_side
        from osreg.text import load_bank

        self.text = torch.from_numpy(load_bank(self.cfg.text_encoder).embeddings)

    @torch.inference_mode()
    def _run(self, img0, mask0, img1, mask1, fine: bool, features0: tuple | None = None):
        a0, m0 = pad_to_multiple(img0, mask0, 8)
        a1, m1 = pad_to_multiple(img1, mask1, 8)
        t0 = torch.from_numpy(a0)[None, None]
        t1 = torch.from_numpy(a1)[None, None]
        c0 = torch.nn.functional.avg_pool2d(torch.from_numpy(m0)[None, None].float(), 8)[:, 0] > 0.5
        c1 = torch.nn.functional.avg_pool2d(torch.from_numpy(m1)[None, None].float(), 8)[:, 0] > 0.5
        out = self.model(t0, t1, self.text, c0, c1, fine=fine, features0=features0, compact=True)

        def refine(b, i, j, xy0, xy1):
            return self.model.fine_refine(out, b, i, j, xy0, xy1)

        return dense_matches(out["conf"], tuple(out["coarse_shape0"].tolist()), tuple(out["coarse_shape1"].tolist()),
                             self.cfg.coarse_threshold, img0.shape, img1.shape, refine=refine if fine else None,
                             cells0=out["cells0"], cells1=out["cells1"])

    def _optical_features(self, img0, mask0):
        with torch.inference_mode():
            return self.model.msfl(torch.from_numpy(pad_to_multiple(img0, mask0, 8)[0])[None, None], 0, fine=False)

    def _coarse(self, img0, mask0, img1, mask1, features0=None):
        return self._run(img0, mask0, img1, mask1, fine=False, features0=features0)

    def _final(self, img0, mask0, img1, mask1):
        return self._run(img0, mask0, img1, mask1, fine=True)

    def _match(self, image0, image1, mask0, mask1) -> MatchResult:
        result = super()._match(image0, image1, mask0, mask1)
        result.info["use_text"] = self.cfg.use_text
        return result

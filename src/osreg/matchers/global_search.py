"""The global rotation/scale search: a stage that wraps any matcher and needs no starting guess.

1. **Coarse FFT search.** Both images go to a coarse level (the optical image's longer side ``coarse_side`` px) and
   are described by oriented-gradient channels (CFOG-like, :func:`osreg.descriptors.oriented_gradient_channels`,
   with each pixel's channel mean removed so that a random alignment scores about 0, and each pixel weighted by its
   structure, ``structure_power``). For every rotation over the full circle (``rotation_step``) and every scale in
   ``[min_scale, max_scale]`` (``scales_per_octave``), the SAR is turned and rescaled into the optical frame, its
   channels are computed there, and their correlation with the optical channels over every translation comes from
   one batch of FFTs per scale; the second half of the circle comes from the first (a half turn only flips the
   turned SAR's canvas). The score of a translation is
   the correlation per overlapping pixel (no-data and black borders of both images are left out by the masks), over
   translations that overlap at least ``min_overlap`` of the optical image.
2. **Ranked hypotheses.** Each (rotation, scale) keeps its best translation; the best ``candidates`` distinct
   hypotheses (non-maximum suppression in rotation and scale) are kept with their scores and a peak margin (the
   best score over the best distinct other one).
3. **Verification by the matcher.** The SAR is rectified into the optical frame by each hypothesis in turn (one cubic
   warp of the input SAR; a hypothesis that is a pure translation of the identity only shifts it, without resampling)
   and the wrapped matcher runs on the rectified pair at its working resolution. A homography fitted to its matches
   is judged by the verdict's checks (inliers, residuals, coverage, and the sharpness of the dense oriented-gradient
   agreement at the fit); trusted candidates rank first, then by inliers, and the search stops at the first trusted
   candidate with ``accept_inliers`` inliers (a verifier that allows it, CFOG, verifies several candidates side by
   side on the thread count set, ``--threads``, with the results of one thread). When none has that many (the pair as
   given included), the search runs again at the finer ``escalate_side`` level, turning the SAR only near the
   rotations of the first level's hypotheses and their half turns, and its new hypotheses are verified too. The
   chosen candidate's matches are mapped back to the input SAR's pixels.
4. **Final pass.** The chosen hypothesis and its matches' fit are refined by the dense score (``fine_side``), and the
   matcher matches once more on the better of the two with its reach shortened (``final_reach``). That pass is the
   answer unless the earlier pass was trusted and it is not; an earlier pass trusted without being confirmed (fewer
   than ``accept_inliers`` inliers) yields to more inliers. When nothing is confirmed, the best ranked verified
   candidates at other places get a final pass too (``final_alternatives``; side by side with the chosen one's when
   the verifier allows it); one with 1.5 times the answer's inliers replaces it. A final pass the verdict trusts
   with ``final_confirm_inliers`` inliers confirms the search.

Scene structure is often nearly symmetric under a half turn, so the right hypothesis and its 180-degree twin can
score alike at the coarse level: the verification, at full resolution, tells them apart.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from typing import Callable

import cv2
import numpy as np

from osreg.geometry import GeometryConfig, apply_transform, estimate_transform, rectify
from osreg.matchers.base import Matcher, Stage
from osreg.matchers.coarse_search import (
    Hypothesis,
    hypothesis_summary,
    is_shift,
    refine_hypothesis,
    same_place,
    search_hypotheses,
)
from osreg.matchers.global_search_config import GlobalSearchConfig
from osreg.runtime import ordered_map, thread_count
from osreg.types import MatchResult
from osreg.verdict import judge

__all__ = ["GlobalSearchConfig", "GlobalSearchStage"]

logger = logging.getLogger(__name__)

ALTERNATIVE_GAIN = 1.5  # an alternative's final pass replaces an unconfirmed answer with this many times its inliers


class GlobalSearchStage(Stage):
    """A matcher wrapped in the global search (see the module doc). It answers to the matcher contract itself, at
    the wrapped matcher's working resolution.

    Args:
        inner: the matcher that verifies the hypotheses and gives the final matches.
        config: the search settings.
    """

    def __init__(self, inner: Matcher, config: GlobalSearchConfig | None = None) -> None:
        super().__init__(inner, config if config is not None else GlobalSearchConfig())
        if self.config.verifier == "cfog":
            from osreg.matchers.cfog import CFOGMatcher

            self._verifier: Matcher = CFOGMatcher()
        else:
            self._verifier = inner

    def _verify(self, image0, mask0, image1, mask1, W: np.ndarray | None, run: Callable, reach: int = 0
                ) -> tuple | None:
        """Match with ``run`` (a matcher bound to the optical image, :meth:`Matcher.bind_reference`) the SAR rectified
        by W (optical px -> SAR px; None: the pair as given, not warped at all; a pure integer shift moves the SAR
        without resampling it); with ``reach`` > 0, only the matches within that many px of the rectification (in x
        and in y) are kept.

        Returns:
            (rank key, matches with keypoints1 in rectified px, their homography, the transform used: rectified px
            -> SAR px), or None when nothing can be fitted.
        """
        if W is None:
            W, r, rm = np.eye(3), image1, mask1
        elif is_shift(W, image0.shape):
            W = np.round(W)
            r = cv2.warpAffine(image1, W[:2], image0.shape[::-1], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
            rm = cv2.warpAffine(mask1.astype(np.uint8), W[:2], image0.shape[::-1],
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        else:
            r, rm = rectify(image1, mask1, W, image0.shape)
        if rm.sum() < 0.05 * rm.size:
            return None
        res = run(r.astype(np.float32, copy=False), rm)
        if reach and len(res):
            res = res.subset(np.abs(res.keypoints1 - res.keypoints0).max(axis=1) <= reach)
        est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="homography"))
        if est.H is None:
            return None
        verdict = judge(est, res.keypoints0, mask0, images=(image0, r, rm))
        return (verdict.good, est.n_inliers), res, est.H, W

    def _choose(self, image0, mask0, image1, mask1, info: dict, verifier: Matcher
                ) -> tuple[tuple | None, int | str | None]:
        """The verified candidate the search chooses (None when none can be fitted) and its rank ("as given": the
        pair as given); ``verifier``: the matcher that verifies (the wrapped one or CFOG)."""
        run = verifier.bind_reference(image0, mask0)
        workers = thread_count() if verifier.concurrent else 1  # verifications side by side
        # the pair as given first: images of one place are often nearly aligned already, and then the matcher's
        # own result is kept as it is (no resampling, no search)
        best = self._verify(image0, mask0, image1, mask1, None, run)
        tried = [best] if best is not None else []  # every verified candidate, for the final pass's alternatives
        chosen: int | str | None = "as given" if best is not None else None
        if self._strong(best):
            info.update(chosen="as given", hypotheses_verified=0, confirmed=True)
            return best, chosen
        hyps = search_hypotheses(image0, mask0, image1, mask1, self.config)
        info["candidates"] = hypothesis_summary(hyps)
        logger.debug("global search: the pair as given is not confirmed; %d hypotheses at %d px%s", len(hyps),
                     self.config.coarse_side, f", the best {info['candidates'][0]}" if hyps else "")
        if len(hyps) > 1:
            info["peak_margin"] = round(hyps[0].score / max(hyps[1].score, 1e-6), 4)
        info["hypotheses_verified"] = 0
        best, chosen = self._verify_ranked(image0, mask0, image1, mask1, hyps, 0, best, chosen, info, run, tried,
                                           workers)
        if self.config.escalate_side > self.config.coarse_side and not self._strong(best):
            # nothing confirmed with accept_inliers inliers, not even the pair as given (which the verdict may trust
            # with fewer): the right hypothesis may not be among the coarse level's best; search at a finer level
            # and verify what the first pass did not already verify
            more = search_hypotheses(image0, mask0, image1, mask1, self.config.escalated(),
                                     near=None if self.config.escalate_full_circle else [h.rotation for h in hyps])
            more = [h for h in more if not any(same_place(h.H, g.H, image0.shape) for g in hyps)]
            info["escalated_candidates"] = hypothesis_summary(more)
            logger.debug("global search: none of %d hypotheses confirmed; %d more at %d px", len(hyps), len(more),
                         self.config.escalate_side)
            best, chosen = self._verify_ranked(image0, mask0, image1, mask1, more, len(hyps), best, chosen, info,
                                               run, tried, workers)
        info["chosen"] = chosen
        if best is None:
            return None, None
        key, res, F, W = best
        # a searched hypothesis is confirmed only by a trusted fit with accept_inliers inliers (the verdict refuses
        # the others: trying many hypotheses makes a weak wrong one likelier to pass); the pair as given needs trust
        info["confirmed"] = self._trusted(best, chosen)
        hypothesis = W
        if chosen != "as given":
            for _ in range(self.config.refine_passes):  # rectify again with the chosen candidate's own fit
                out = self._verify(image0, mask0, image1, mask1, W @ F, run)
                if out is None or out[0][0] < key[0]:  # keep the earlier pass unless this one is trusted as well
                    break
                key, res, F, W = out
                info["refine_passes"] = info.get("refine_passes", 0) + 1
        short = verifier.with_reach(self.config.final_reach) if self.config.final_reach else verifier
        # the final pass (a strong pair as given never gets here: an aligned pair keeps the matcher's own result,
        # unresampled)
        if self.config.fine_side and short is not verifier:
            return self._finish(image0, mask0, image1, mask1, (key, res, F, W), hypothesis, tried, info, short), chosen
        return (key, res, F, W), chosen

    def _finish(self, image0, mask0, image1, mask1, best: tuple, hypothesis: np.ndarray, tried: list[tuple],
                info: dict, short: Matcher) -> tuple:
        """The final passes (module doc, step 4) after the choice ``best`` (what :meth:`_verify` returns), whose
        hypothesis was ``hypothesis``; ``tried``: every verified candidate; ``short``: the verifier with
        ``final_reach``. Returns the answer, like ``best``."""
        key, res, F, W = best
        run = short.bind_reference(image0, mask0)  # the optical side once for every final pass
        starts = [hypothesis, W @ F]
        # when nothing is confirmed, the best ranked other candidates, each at a place no final pass started from,
        # get one too, side by side with the chosen one's when the verifier allows it (each then on one thread)
        alternatives = [] if info["confirmed"] else self._alternatives(tried, starts, image0.shape)
        passes = [starts] + [[a[3], a[3] @ a[2]] for a in alternatives]
        workers = min(thread_count(), len(passes)) if short.concurrent else 1
        inner = 1 if workers > 1 else None
        out, *others = ordered_map(lambda s: self._final_pass(image0, mask0, image1, mask1, s, run, inner), passes,
                                   workers)
        # kept unless the earlier pass was trusted and this one is not; an unconfirmed earlier pass (trusted with
        # fewer than accept_inliers inliers: the verdict refuses it anyway) yields to more inliers
        info["final_pass"] = out is not None and (out[0][0] >= key[0] or (not info["confirmed"] and out[0][1] > key[1]))
        if info["final_pass"]:
            key, res, F, W = out
        if info["confirmed"]:
            return key, res, F, W
        info["final_alternatives"] = len(alternatives)
        # an alternative replaces the answer with ALTERNATIVE_GAIN times its inliers, trusted or not (the verdict
        # refuses an unconfirmed result anyway; a wrong place can pass its checks where a right one fails them)
        for n, out in enumerate(others, start=1):
            if out is not None and out[0][1] >= ALTERNATIVE_GAIN * max(key[1], 1):
                key, res, F, W = out
                info["final_alternative"] = n
        if self.config.final_confirm_inliers and key[0] and key[1] >= self.config.final_confirm_inliers:
            # far more inliers than a first verification needs (accept_inliers), with the verdict's trust
            info.update(confirmed=True, confirmed_by="final pass")
        return key, res, F, W

    def _alternatives(self, tried: list[tuple], starts: list[np.ndarray], shape: tuple[int, int]) -> list[tuple]:
        """Up to ``final_alternatives`` verified candidates of ``tried`` (what :meth:`_verify` returns), best ranked
        first, whose rectification and fit are at places (:func:`same_place`) that none of ``starts`` nor a better
        ranked one's is at."""
        out: list[tuple] = []
        places = list(starts)
        for cand in sorted(tried, key=lambda c: c[0], reverse=True):
            if len(out) >= self.config.final_alternatives:
                break
            own = [cand[3], cand[3] @ cand[2]]
            if not any(same_place(a, p, shape) for a in own for p in places):
                out.append(cand)
                places += own
        return out

    def _final_pass(self, image0, mask0, image1, mask1, starts: list[np.ndarray], run: Callable,
                    workers: int | None = None) -> tuple | None:
        """The best scoring of the rectifications ``starts`` (a candidate's hypothesis and its matches' fit: where local
        matches are mostly wrong, the fit can drift further from the truth than the hypothesis was), each refined by
        the dense score (:func:`refine_hypothesis`), matched by ``run`` (the verifier with ``final_reach``, bound to
        the optical image), the refinement on ``workers`` threads (None: all). Returns what :meth:`_verify` returns,
        or None."""
        fine = refine_hypothesis(image0, mask0, image1, mask1, starts, self.config, workers)
        if fine is None:
            return None
        return self._verify(image0, mask0, image1, mask1, fine[0], run)

    def _strong(self, best: tuple | None) -> bool:
        """Whether a verified candidate is trusted by the verdict with ``accept_inliers`` inliers."""
        return best is not None and bool(best[0][0]) and best[0][1] >= self.config.accept_inliers

    def _trusted(self, best: tuple | None, chosen: int | str | None) -> bool:
        """Whether a verified candidate is confirmed: strong (:meth:`_strong`); the pair as given needs trust only."""
        return best is not None and bool(best[0][0]) and (chosen == "as given" or self._strong(best))

    def _verify_ranked(self, image0, mask0, image1, mask1, hyps: list[Hypothesis], first: int, best: tuple | None,
                       chosen: int | str | None, info: dict, run: Callable, tried: list[tuple], workers: int
                       ) -> tuple[tuple | None, int | str | None]:
        """Verify ``hyps`` best first (their ranks counted from ``first``), stopping at the first one trusted with
        ``accept_inliers`` inliers; returns the best of them and ``best`` with its rank, and adds every verified
        candidate to ``tried``. Up to ``workers`` run side by side, with the results of a serial run (at most
        ``workers - 1`` more are verified than it would verify)."""
        outs = ordered_map(lambda hyp: self._verify(image0, mask0, image1, mask1, hyp.H, run), hyps, workers)
        with closing(outs):
            for rank, out in enumerate(outs, start=first):
                info["hypotheses_verified"] = rank + 1
                if out is None:
                    continue
                tried.append(out)
                if best is None or out[0] > best[0]:
                    best, chosen = out, rank
                if self._strong(out):
                    break
        return best, chosen

    def _with_verifier(self, image0, mask0, image1, mask1, info: dict) -> tuple | None:
        """The search with another verifier: the wrapped matcher's own pass on the pair as given first (kept when it
        is trusted with ``accept_inliers`` inliers, as without a verifier); otherwise the verifier chooses, and the
        wrapped matcher's pass on the chosen rectification (refined by the verifier's fit) is the answer, unless its
        pass on the pair as given ranks higher (against a choice the verifier confirmed, that pass must be trusted as
        well). The pair as given counts as a choice once the verifier trusts it: a matcher with a shorter reach than
        the verifier's (CSTF's 16 px against CFOG's 24) then matches the pair brought within its reach. A result is
        confirmed only if the verifier confirmed the choice and the verdict trusts the wrapped matcher's pass."""
        inner = self.inner.bind_reference(image0, mask0)
        own = self._verify(image0, mask0, image1, mask1, None, inner)
        if self._strong(own):
            info.update(chosen="as given", hypotheses_verified=0, confirmed=True)
            return own
        best, chosen = self._choose(image0, mask0, image1, mask1, info, self._verifier)
        verified = bool(info.get("confirmed"))  # the verifier confirmed its choice
        if best is not None and (chosen != "as given" or best[0][0]):
            key, res, F, W = best
            # the verifier's fit has brought the pair within a few pixels: matches further from it contradict it
            best = self._verify(image0, mask0, image1, mask1, W @ F, inner, self.config.inner_reach)
            info["confirmed"] = bool(verified and best is not None and best[0][0])
        else:
            best = None
        # against a choice the verifier confirmed, the wrapped matcher's own pass on the pair as given needs trust:
        # more inliers alone (of a pass the verdict refuses) do not outweigh the verifier's confirmation
        if own is not None and (best is None or (own[0] > best[0] and (own[0][0] or not verified))):
            info.update(chosen="as given", confirmed=bool(own[0][0]))
            return own
        return best

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        mask0 = np.ones(image0.shape, bool) if mask0 is None else mask0
        mask1 = np.ones(image1.shape, bool) if mask1 is None else mask1
        info: dict = {"kind": "global", "accept_inliers": self.config.accept_inliers,
                      "verifier": self.config.verifier}
        start = time.perf_counter()
        if self._verifier is self.inner:
            best, chosen = self._choose(image0, mask0, image1, mask1, info, self.inner)
        else:
            best = self._with_verifier(image0, mask0, image1, mask1, info)
        info["seconds"] = round(time.perf_counter() - start, 3)
        logger.info("global search: %s", search_summary(info))
        if best is None:
            return MatchResult.empty(search=info)
        key, res, F, W = best
        k1 = apply_transform(W, res.keypoints1) if len(res) else res.keypoints1
        return MatchResult(res.keypoints0, k1, res.confidence, {**res.info, "search": info})


def search_summary(info: dict) -> str:
    """One line on what a global search did, from its account (``MatchResult.info["search"]``)."""
    chosen = info.get("chosen")
    if chosen == "as given":
        what = "kept the pair as given"
    elif isinstance(chosen, int):
        first = info.get("candidates", [])
        cands = first + info.get("escalated_candidates", [])
        level = "" if chosen < len(first) else ", escalated level"
        h = cands[chosen] if chosen < len(cands) else {}
        what = (f"chose rotation {h.get('rotation', float('nan')):.1f} deg, scale {h.get('scale', float('nan')):.3f} "
                f"(hypothesis {chosen + 1}{level})")
    else:
        what = "found nothing to fit"
    confirmed = "confirmed" if info.get("confirmed") else "not confirmed"
    return (f"{what}, {confirmed}; hypotheses verified: {info.get('hypotheses_verified', 0)}"
            f"{' (escalated)' if 'escalated_candidates' in info else ''}; {info.get('seconds', 0.0):.1f} s")

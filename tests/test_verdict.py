"""The verdict's checks: each failed one is named (``Verdict.failed_checks``) beside its reason in words."""

from __future__ import annotations

import numpy as np

from osreg.geometry import Estimate
from osreg.verdict import CHECKS, judge


def estimate(points: np.ndarray, H: np.ndarray | None) -> Estimate:
    """An affine fit of which every match is an exact inlier."""
    return Estimate(H, np.ones(len(points), bool), np.zeros(len(points)), "affine")


def grid(n: int, lo: float, hi: float) -> np.ndarray:
    g = np.linspace(lo, hi, n)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def test_every_failed_check_is_named_with_its_reason():
    valid = np.ones((200, 200), bool)
    spread = grid(7, 10, 190)  # 49 points over the whole image
    good = judge(estimate(spread, np.eye(3)), spread, valid)
    assert good.good and good.reasons == () and good.failed_checks == ()
    nothing = judge(estimate(spread[:3], None), spread[:3], valid)
    assert nothing.failed_checks == ("fit",) and nothing.reasons == ("no transform could be fitted to 3 matches",)
    bunched = grid(3, 10, 20)  # 9 points in one corner
    few = judge(estimate(bunched, np.eye(3)), bunched, valid)
    assert not few.good and few.failed_checks == ("inliers", "coverage")
    assert few.reasons[0] == "too few inliers: 9 (at least 15 needed)"
    assert few.reasons[1].startswith("inliers span only")
    mirror = judge(estimate(spread, np.diag([-1.0, 1.0, 1.0])), spread, valid)
    assert mirror.failed_checks == ("degenerate",) and mirror.reasons == ("degenerate transform: it mirrors the image",)
    search = {"confirmed": False, "hypotheses_verified": 4, "accept_inliers": 40}
    unconfirmed = judge(estimate(spread, np.eye(3)), spread, valid, search=search)
    assert unconfirmed.failed_checks == ("search",) and len(unconfirmed.reasons) == 1
    every = nothing.failed_checks + few.failed_checks + mirror.failed_checks + unconfirmed.failed_checks
    assert set(every) <= set(CHECKS)

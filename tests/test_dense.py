"""Dense matching shared by TAR and PromptMID: the dual softmax and the mutual nearest neighbours."""

from __future__ import annotations

import torch

from osreg.matchers.dense import coarse_matches, dual_softmax


def reference_dual_softmax(sim, mask0, mask1):
    s = sim.masked_fill(~mask0[:, :, None], -1e4).masked_fill(~mask1[:, None, :], -1e4)
    return s.softmax(1) * s.softmax(2)


def test_dual_softmax_is_the_product_of_the_two_softmaxes_with_and_without_autograd():
    torch.manual_seed(0)
    sim = torch.randn(2, 30, 50) * 8
    mask0, mask1 = torch.rand(2, 30) > 0.2, torch.rand(2, 50) > 0.3
    ref = reference_dual_softmax(sim, mask0, mask1)
    with torch.inference_mode():
        fast = dual_softmax(sim.clone(), mask0, mask1)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)
    # a masked cell never matches a valid one
    assert float(fast[0][~mask0[0]][:, mask1[0]].max()) < 1e-30
    assert float(fast[1][mask0[1]][:, ~mask1[1]].max()) < 1e-30
    # training: the same values, and gradients reach the similarity (no in-place step breaks autograd)
    leaf = sim.clone().requires_grad_()
    out = dual_softmax(leaf, mask0, mask1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    out[0, 3, 4].backward()
    assert leaf.grad is not None and float(leaf.grad.abs().sum()) > 0
    torch.testing.assert_close(leaf, sim, rtol=0, atol=0)  # the input was not overwritten


def test_coarse_matches_are_the_mutual_maxima_above_the_threshold():
    torch.manual_seed(1)
    conf = reference_dual_softmax(torch.randn(2, 40, 60) * 6, torch.ones(2, 40, dtype=bool), torch.ones(2, 60, dtype=bool))
    b, i, j, score = coarse_matches(conf, 0.05)
    expected = {(bb, ii, int(conf[bb, ii].argmax())) for bb in range(2) for ii in range(40)
                if float(conf[bb, ii].max()) > 0.05 and int(conf[bb, :, int(conf[bb, ii].argmax())].argmax()) == ii}
    assert len(expected) > 10  # the case is not trivial
    assert set(zip(b.tolist(), i.tolist(), j.tolist(), strict=True)) == expected
    torch.testing.assert_close(score, conf[b, i, j])
    assert len(coarse_matches(torch.zeros(1, 5, 7), 0.05)[0]) == 0  # nothing above the threshold: empty, not an error
    # a compact confidence with no valid cell on one side
    with torch.inference_mode():
        for shape in ((1, 0, 7), (1, 5, 0)):
            assert dual_softmax(torch.zeros(shape)).shape == shape
            assert all(len(t) == 0 for t in coarse_matches(torch.zeros(shape), 0.05))


def test_dual_softmax_columns_owned_by_weak_rows():
    """Columns whose whole mass lies in rows with a far lower maximum than the best row (their sums underflow in the
    shared pass of exponentials) still get the exact column softmax."""
    torch.manual_seed(2)
    sim = torch.full((1, 50, 60), -200.0)
    sim[0, 0, :30] = 10.0 + torch.randn(30)  # one strong row, on the left half only
    sim[0, 0, 30:] = -300.0
    sim[0, 1:, 30:] = -150.0 + torch.randn(49, 30)  # the right half belongs to rows 160 below it
    ref = sim.softmax(1) * sim.softmax(2)
    with torch.inference_mode():
        out = dual_softmax(sim.clone())
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert float(out[0, 1:, 30:].sum(0).max()) > 0.1  # the case really puts weight there

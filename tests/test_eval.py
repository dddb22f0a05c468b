"""Metrics, protocols and the benchmark runner."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest
from conftest import textured

from osreg.errors import InputError
from osreg.eval.datasets import GroundTruth, load_pairs
from osreg.eval.deform import pair_seed, sample_deformation, warp_image
from osreg.eval.metrics import auc, pair_metrics, summarize
from osreg.geometry import Estimate, apply_transform
from osreg.types import MatchResult


def test_pair_metrics_perfect_and_failed():
    H = np.array([[1, 0, 5.0], [0, 1, -3.0], [0, 0, 1]])
    gt = GroundTruth(H=H)
    p0 = np.random.default_rng(0).uniform(0, 100, (50, 2))
    p1 = apply_transform(H, p0)
    p1[:10] += 4.0  # 10 matches off by 5.7 px
    m = MatchResult(p0, p1, np.ones(50))
    inl = np.r_[np.zeros(10, bool), np.ones(40, bool)]
    est = Estimate(H, inl, np.zeros(50), "affine")
    r = pair_metrics(m, est, gt, 100, 100)
    assert r["ncm"] == 40 and r["cmr3"] == pytest.approx(0.8) and r["cmr1"] == pytest.approx(0.8)
    assert r["reg_error"] == pytest.approx(0.0, abs=1e-9) and r["match_rmse"] == pytest.approx(0.0, abs=1e-9)
    # fewer than 10 correct matches: RMSE 20 px and a failed pair by the usual rule
    r2 = pair_metrics(m.subset(np.arange(15)), Estimate(None, np.zeros(15, bool), np.full(15, np.nan), "affine"),
                      gt, 100, 100)
    assert r2["ncm"] == 5 and r2["match_rmse"] == 20.0 and r2["match_failed"] and math.isinf(r2["reg_error"])


def test_auc_values():
    assert auc([0.0, 0.0], 3) == pytest.approx(1.0)
    assert auc([math.inf, math.inf], 3) == 0.0
    # SuperGlue/LoFTR convention: recall rises linearly from (0, 0) to (1.5, 0.5), then stays 0.5 to 3 px
    assert auc([1.5, math.inf], 3) == pytest.approx((0.5 * 1.5 * 0.5 + 1.5 * 0.5) / 3)


def test_summary_counts_false_accepts():
    base = {"ncm": 0, "cmr1": 0, "cmr3": 0, "cmr5": 0, "match_rmse": 20, "match_failed": True, "time_s": 1.0,
            "peak_mem_mb": 100.0}
    rows = [dict(base, reg_error=0.5, corner_error=0.5, verdict="good"),
            dict(base, reg_error=9.0, corner_error=9.0, verdict="good"),
            dict(base, reg_error=math.inf, corner_error=math.inf, verdict="failed")]
    s = summarize(rows)
    assert s["sr1"] == pytest.approx(1 / 3) and s["sr5"] == pytest.approx(1 / 3)
    assert s["accepted"] == 2 and s["false_accepts"] == 1 and s["false_accept_rate"] == 0.5
    assert s["median_reg_error_accepted"] == pytest.approx(4.75)
    assert s["false_accepts_beyond_reach"] == 1  # no gt_fit_error: the ground truth's own fit counts as exact
    # non-affine ground truth: a trusted result within 2 px of the best global fit is at the model's limit, not
    # beyond it; one further off is beyond it
    rows = [dict(base, reg_error=9.0, corner_error=9.0, verdict="good", gt_fit_error=7.5),
            dict(base, reg_error=9.0, corner_error=9.0, verdict="good", gt_fit_error=6.9),
            dict(base, reg_error=6.0, corner_error=6.0, verdict="failed", gt_fit_error=1.0)]
    s = summarize(rows)
    assert s["false_accepts"] == 2 and s["false_accepts_beyond_reach"] == 1


def test_refusal_table_counts_refused_results_by_their_first_failed_check():
    from osreg.eval.benchmark import refusal_table

    row = {"method": "cfog", "protocol": "paper"}
    rows = [dict(row, verdict="failed", failed_checks="search", reg_error=1.2),
            dict(row, verdict="failed", failed_checks="search", reg_error=40.0),
            dict(row, verdict="failed", failed_checks="inliers;alignment_peak", reg_error=math.inf),
            dict(row, verdict="good", failed_checks="", reg_error=0.5),
            dict(row, protocol="aligned", verdict="failed", failed_checks="fit", reg_error=math.inf),
            dict(row, method="sift", verdict="good", failed_checks="", reg_error=0.7)]
    assert refusal_table(rows, "paper", ("cfog", "sift")).splitlines() == [
        "| method | refused | right (<= 5 px) | first failed check: refused (right) |",
        "|---|---|---|---|",
        "| cfog | 3 | 1 | search 2 (1 right), inliers 1 (0 right) |"]
    assert refusal_table(rows, "paper", ("sift",)) == ""  # nothing refused: no table


def test_large_deformation_ground_truth_is_exact():
    """Pixels that the composed ground truth says correspond have the same value after the deformation."""
    img = textured((200, 240), seed=3)
    rng = np.random.default_rng(pair_seed(0, "x"))
    d = sample_deformation(240, 200, rng)
    # the reported rotation and scale are the deformation's (mild perspective aside)
    from osreg.geometry import decompose

    p = decompose(d.D)
    assert min((d.rotation_deg + p["rotation_deg"]) % 360, -(d.rotation_deg + p["rotation_deg"]) % 360) < 1.5
    assert np.sqrt(p["determinant"]) == pytest.approx(d.scale, rel=0.02)
    warped, mask = warp_image(img, np.ones_like(img, bool), d.D)
    gt = GroundTruth(H=np.eye(3)).composed(after=d.D)
    pts = np.random.default_rng(1).uniform(20, 180, (200, 2))
    q = gt.map(pts)
    vals = cv2.remap(warped, q[:, 0:1].astype(np.float32), q[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
    ref = img[np.round(pts[:, 1]).astype(int), np.round(pts[:, 0]).astype(int)]
    exact = cv2.remap(img, pts[:, 0:1].astype(np.float32), pts[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
    assert np.abs(vals - exact).mean() < 0.02 and np.corrcoef(vals, ref)[0, 1] > 0.95
    assert mask.sum() > 0.9 * 200 * 240 * min(d.scale, 1) ** 2 * 0.9  # whole image kept on the canvas
    # the deformation is seeded per pair
    d2 = sample_deformation(240, 200, np.random.default_rng(pair_seed(0, "x")))
    np.testing.assert_array_equal(d.D, d2.D)


def test_tiepoint_ground_truth_interpolates_its_points():
    p0 = np.random.default_rng(0).uniform(0, 100, (30, 2))
    p1 = p0 + [3.0, -2.0] + 0.01 * p0**1.5
    gt = GroundTruth(points0=p0, points1=p1)
    assert gt.kind == "tiepoints"
    np.testing.assert_allclose(gt.map(p0), p1, atol=0.3)


def test_a_cropped_tie_point_truth_is_scored_only_where_the_crop_has_pixels():
    """A crop keeps every tie point for the interpolation, but the error is measured only at the tie points inside
    it: a registration right inside a 50 px crop and wrong far outside it scores 0 there."""
    from osreg.eval.metrics import pair_metrics
    from osreg.geometry import Estimate, translation
    from osreg.types import MatchResult

    p0 = np.array([[10.0, 10], [40, 20], [30, 45], [150, 150], [180, 20], [20, 170]])
    p1 = p0 + [5.0, -3.0]
    p1[3:] += [40.0, 0.0]  # far from the crop the SAR is 40 px further off
    gt = GroundTruth(points0=p0, points1=p1).composed(before=translation(-5, -5), after=translation(-5, -5))
    inside = gt.eval_points(50, 50)
    np.testing.assert_allclose(inside, p0[:3] - 5)
    np.testing.assert_array_equal(gt.corner_points(50, 50), inside)
    np.testing.assert_array_equal(gt.inside(50, 50), [True, True, True, False, False, False])
    H = np.array([[1.0, 0, 5], [0, 1, -3], [0, 0, 1]])  # right inside the crop
    est = Estimate(H=H, inliers=np.zeros(0, bool), residuals=np.zeros(0), model="affine")
    m = pair_metrics(MatchResult.empty(), est, gt, 50, 50)
    assert m["reg_error"] == pytest.approx(0.0, abs=0.6) and m["corner_error"] == pytest.approx(0.0, abs=0.6)
    assert pair_metrics(MatchResult.empty(), est, gt, 200, 200)["reg_error"] > 15


def test_what_a_global_transform_can_reach_on_non_affine_tie_points():
    from osreg.eval.benchmark import reachable_note

    rng = np.random.default_rng(1)
    p0 = rng.uniform(0, 400, (60, 2))
    A = np.array([[1.02, 0.05, 12.0], [-0.04, 0.98, -7.0], [0, 0, 1]])
    affine = GroundTruth(points0=p0, points1=apply_transform(A, p0))
    assert affine.global_fit_error("affine", 400, 400) < 0.05  # an affine truth: fitted exactly
    assert affine.global_fit_error("similarity", 400, 400) > 1.0  # ... but not by a similarity
    bump = 12.0 * np.exp(-((p0 - 200) ** 2).sum(1) / (2 * 60.0**2))  # a local 12 px layover-like bump along x
    local = GroundTruth(points0=p0, points1=apply_transform(A, p0) + np.c_[bump, np.zeros(60)])
    e = local.global_fit_error("affine", 400, 400)
    assert 1.0 < e < 12.0
    assert GroundTruth(H=A).global_fit_error("affine", 400, 400) < 1e-6
    rows = [{"dataset": "lzk", "protocol": "aligned", "pair": "a", "gt_fit_error": 7.5, "method": m} for m in "xy"]
    rows += [{"dataset": "lzk", "protocol": "aligned", "pair": "b", "gt_fit_error": 3.0, "method": "x"},
             {"dataset": "volkov", "protocol": "aligned", "pair": "c", "gt_fit_error": 3.8, "method": "x"}]
    note = reachable_note(rows, "affine")
    assert "- lzk / aligned: the least-squares global affine fitted to the ground truth itself is within 5 px on 1 " \
           "of 2 pairs" in note and "SR@5 of about 50.0 %" in note and "volkov" not in note
    assert reachable_note(rows[-1:], "affine") == ""


def test_unknown_dataset_message(tmp_path):
    with pytest.raises(InputError, match=r"^unknown dataset 'foo'; known datasets: volkov_s1s2_10m, "):
        load_pairs(tmp_path, ["foo"])
    with pytest.raises(InputError, match=r"dataset folder not found: .*osmnet_zhanghan9718 \(set --data or \$OSREG_DATA\)"):
        load_pairs(tmp_path, ["osmnet_zhanghan9718"])


def test_dataset_loaders_read_every_kind(shared_data):
    pairs = load_pairs(shared_data, ["volkov_s1s2_10m", "osmnet_zhanghan9718", "ossift_xym2009",
                                     "lzk2211_xiangjiang", "bigearthnet_example_pypi"])
    by = {}
    for p in pairs:
        by.setdefault(p.dataset, []).append(p)
    assert len(by["volkov_s1s2_10m"]) == 50 and len(by["osmnet_zhanghan9718"]) == 4
    assert len(by["lzk2211_xiangjiang"]) == 18 and by["lzk2211_xiangjiang"][0].gt.kind == "tiepoints"
    assert len(by["bigearthnet_example_pypi"]) == 6
    o, s = by["bigearthnet_example_pypi"][0].load()
    assert o.count == 3 and s.dtype == "float32"
    a = by["ossift_xym2009"][0]
    np.testing.assert_allclose(a.gt.map([[0.0, 0.0]]), [[165.5, 133.0]])


def test_benchmark_end_to_end(shared_data, tmp_path):
    from osreg.eval.benchmark import BenchmarkConfig, run_benchmark

    # CFOG without the search's escalation: nothing registers this osmnet pair, and the escalated search would
    # only add time here (it is tested in test_global_search.py), nor do the default's finer grid, rescoring or the
    # final passes of other candidates; the options also go through a method spec
    cfog = ("cfog[global_escalate_side=0,global_scales_per_octave=4,global_rotation_step=10,global_rescore_side=0,"
            "global_final_alternatives=0]")
    cfg = BenchmarkConfig(data_dir=str(shared_data), datasets=("osmnet_zhanghan9718",), methods=("sift", cfog),
                          max_pairs=1, threads=1)
    written = run_benchmark(cfg, tmp_path / "rep")
    rows = list(csv.DictReader(open(written["per_pair_csv"])))
    assert len(rows) == 4 and {r["protocol"] for r in rows} == {"aligned", "large-deformation"}
    # why each result was refused: the verdict's failed checks, none for a trusted one
    from osreg.verdict import CHECKS

    for r in rows:
        checks = r["failed_checks"].split(";") if r["failed_checks"] else []
        assert (r["verdict"] == "good") == (checks == []) and set(checks) <= set(CHECKS)
    # the global search's account (CFOG's default search; SIFT runs without a search here: empty)
    for r in rows:
        if r["method"] == cfog:
            assert int(r["hypotheses_verified"]) >= 0 and r["search_confirmed"] in ("True", "False")
            assert 0 < float(r["search_s"]) <= float(r["time_s"])
        else:
            assert r["hypotheses_verified"] == r["search_confirmed"] == r["search_s"] == ""
    summary = json.loads(open(written["summary_json"]).read())
    assert set(summary["summary"]) == {"sift/aligned", "sift/large-deformation", f"{cfog}/aligned",
                                       f"{cfog}/large-deformation"}
    text = open(written["summary_md"]).read()
    assert f"| {cfog} | 1 |" in text and "## large-deformation" in text and "| FA beyond reach |" in text
    refused = [r for r in rows if r["verdict"] != "good" and r["protocol"] == "large-deformation"]
    assert refused and "### large-deformation: why results were refused" in text
    for m in {r["method"] for r in refused}:
        assert f"| {m} | {sum(r['method'] == m for r in refused)} |" in text
    s = summary["summary"][f"{cfog}/aligned"]
    assert 0 <= s["false_accepts_beyond_reach"] <= s["false_accepts"]
    # osmnet's truth is the same grid: an affine fits it exactly when aligned, not after a perspective deformation
    fit = {r["protocol"]: float(r["gt_fit_error"]) for r in rows}
    assert fit["aligned"] < 0.01 and fit["large-deformation"] > 0.01
    assert cv2.imread(written["plot"]) is not None
    from osreg.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        run_benchmark(cfg, tmp_path / "rep")


def test_method_specs():
    from osreg.cli import split_methods as _split_methods
    from osreg.matchers import parse_method_spec

    assert _split_methods("sift,tar[use_text=false,max_side=384],cfog") == ["sift", "tar[use_text=false,max_side=384]",
                                                                           "cfog"]
    assert parse_method_spec("tar[use_text=false,max_side=384,temperature=0.2]") == (
        "tar", {"use_text": "false", "max_side": "384", "temperature": "0.2"})  # typed by method_setup
    assert parse_method_spec("cfog") == ("cfog", {})
    with pytest.raises(InputError, match=r"bad option 'x' in method spec 'tar\[x\]'; expected key=value"):
        parse_method_spec("tar[x]")


def test_volkov_checked_ground_truth(shared_data):
    ident = {p.name: p.gt for p in load_pairs(shared_data, ["volkov_s1s2_10m"])}
    checked = {p.name: p.gt for p in load_pairs(shared_data, ["volkov_s1s2_10m"], volkov_gt="checked")}
    # pair 188: four strong windows agree (spread 1.09 px) on (-1.00, 1.08) px (alignment_check.csv)
    np.testing.assert_allclose(checked["188"].map([[100.0, 100.0]]), [[99.0, 101.08]])
    np.testing.assert_allclose(ident["188"].map([[100.0, 100.0]]), [[100.0, 100.0]])
    # fewer than four strong windows (140: 3) or inconclusive (214): the identity is kept
    np.testing.assert_allclose(checked["140"].map([[10.0, 10.0]]), [[10.0, 10.0]])
    np.testing.assert_allclose(checked["214"].map([[10.0, 10.0]]), [[10.0, 10.0]])


def test_train_and_val_splits_partition_the_pairs(shared_data):
    from osreg.eval.benchmark import BenchmarkConfig, pair_split

    pairs = load_pairs(shared_data, ["volkov_s1s2_10m", "osmnet_zhanghan9718"])
    split = {(p.dataset, p.name): pair_split(p) for p in pairs}
    volkov = [k for k in split if k[0] == "volkov_s1s2_10m"]
    n_val = sum(split[k] == "val" for k in volkov)
    assert 0.08 * len(volkov) <= n_val <= 0.25 * len(volkov)  # the fixed ~15 % held out from training
    assert all(split[k] == "val" for k in split if k[0] == "osmnet_zhanghan9718")  # never trained on
    with pytest.raises(InputError, match=r"^unknown split 'test'; expected one of all, val, train$"):
        BenchmarkConfig(split="test")


def test_paper_and_self_check_protocols():
    """The TAR paper's deformation (rotation +-35, scale 0.7-1.3, shift +-10 % on a canvas of the SAR's size) and the
    self-check (the optical itself as the SAR, deformed over the full circle): ground truths exact, seeded."""
    from osreg.eval.deform import sample_paper_deformation
    from osreg.geometry import decompose

    img = textured((200, 240), seed=3)
    for k in range(20):
        d = sample_paper_deformation(240, 200, np.random.default_rng(k))
        p = decompose(d.D)
        rot = (-p["rotation_deg"] + 180) % 360 - 180
        assert abs(rot) <= 35.001 and 0.7 <= np.sqrt(p["determinant"]) <= 1.3
        assert abs(rot - ((d.rotation_deg + 180) % 360 - 180)) < 1e-6
        centre = apply_transform(d.D, [[119.5, 99.5]])[0] - [119.5, 99.5]
        assert abs(centre[0]) <= 24.0 and abs(centre[1]) <= 20.0  # the shift: +-10 % of the size
    warped, mask = warp_image(img, np.ones_like(img, bool), d.D, size=(240, 200))
    assert warped.shape == img.shape and 0 < mask.mean() < 1  # content moved off the canvas is masked
    gt = GroundTruth(H=np.eye(3)).composed(after=d.D)
    pts = np.random.default_rng(1).uniform(60, 140, (100, 2))
    q = gt.map(pts)
    inside = mask[np.round(q[:, 1]).astype(int).clip(0, 199), np.round(q[:, 0]).astype(int).clip(0, 239)]
    vals = cv2.remap(warped, q[:, 0:1].astype(np.float32), q[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
    exact = cv2.remap(img, pts[:, 0:1].astype(np.float32), pts[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
    assert inside.sum() > 50 and np.abs(vals - exact)[inside].mean() < 0.02


def test_self_check_protocol_pairs_the_optical_with_itself(shared_data):
    from osreg.eval.benchmark import prepare_pair

    spec = load_pairs(shared_data, ["osmnet_zhanghan9718"])[0]
    aligned = prepare_pair(spec, "aligned", 512, 0)
    pp = prepare_pair(spec, "self-check", 512, 0)
    pts = pp.gt.eval_points(*aligned.img0.shape[::-1])
    q = pp.gt.map(pts)
    vals = cv2.remap(pp.img1, q[:, 0:1].astype(np.float32), q[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
    ref = cv2.remap(aligned.img0, pts[:, 0:1].astype(np.float32), pts[:, 1:2].astype(np.float32),
                    cv2.INTER_LINEAR)[:, 0]
    assert np.corrcoef(vals, ref)[0, 1] > 0.95 and pp.gt.note == "self-check: exact"

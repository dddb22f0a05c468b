"""``osreg benchmark``: score matchers on datasets with ground truth under four protocols.

- ``aligned``: the pairs as given (larger images centre-cropped to ``crop`` px; the SAR window follows the ground
  truth).
- ``paper``: the TAR paper's test deformation of the SAR (rotation +-35 degrees, scale 0.7-1.3, shift +-10 %, on a
  canvas of the SAR's size), seeded per pair; the ground truth is composed accordingly.
- ``large-deformation``: the SAR rotated over the full circle, scaled by 0.5-2 and mildly perspective-warped (on a
  canvas that holds all of it), seeded per pair.
- ``self-check``: the SAR replaced by the optical crop under the large-deformation deformation (same modality):
  any sound method passes it.

Each method runs in its own worker process, so that its peak memory (resident set of that process, Python and
libraries included) can be reported and model loading is kept out of the timings.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import logging
import math
import multiprocessing as mp
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osreg.errors import InputError
from osreg.eval.datasets import GroundTruth, PairSpec, default_data_dir, load_pairs
from osreg.eval.deform import (
    centre_crop_box,
    crop_around,
    pair_seed,
    sample_deformation,
    sample_paper_deformation,
    warp_image,
)
from osreg.eval.metrics import FALSE_ACCEPT_PX, REACH_MARGIN_PX, pair_metrics, summarize
from osreg.geometry import GeometryConfig, translation
from osreg.io.atomic import check_output_folder, staged_folder
from osreg.preprocess import PreprocessConfig, prepare_optical, prepare_sar

logger = logging.getLogger(__name__)

PROTOCOLS = ("aligned", "paper", "large-deformation", "self-check")
SPLITS = ("all", "val", "train")
REPORT_FILES = {"summary_md": "summary.md", "per_pair_csv": "per_pair.csv", "summary_json": "summary.json",
                "plot": "sr_vs_deformation.png"}


@dataclass(frozen=True)
class BenchmarkConfig:
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    datasets: tuple[str, ...] = ("volkov_s1s2_10m", "osmnet_zhanghan9718")
    methods: tuple[str, ...] = ("sift", "aliked", "disk", "xfeat", "cfog", "rift")
    protocols: tuple[str, ...] = ("aligned", "large-deformation")
    crop: int = 512
    max_pairs: int = 0
    seed: int = 0
    model: str = "affine"
    threads: int = 2
    split: str = "all"
    volkov_gt: str = "identity"

    def register_config(self, method: str):
        """The registration config of one method spec: the CLI's, with this benchmark's model and seed."""
        from osreg.pipeline import make_config

        return make_config(method, geometry=GeometryConfig(model=self.model, seed=self.seed))

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise InputError(f"unknown protocol {bad[0]!r}; expected one of {', '.join(PROTOCOLS)}")


@dataclass
class PreparedPair:
    """A pair ready for a matcher: images in [0, 1], masks, ground truth, deformation parameters."""

    img0: np.ndarray
    img1: np.ndarray
    mask0: np.ndarray
    mask1: np.ndarray
    gt: Any
    rotation_deg: float = 0.0
    scale: float = 1.0


def prepare_pair(spec: PairSpec, protocol: str, crop: int, seed: int) -> PreparedPair:
    """Load, crop and (for large-deformation) deform one pair."""
    opt, sar = spec.load()
    pre = PreprocessConfig()
    img0 = prepare_optical(opt, pre)
    img1 = prepare_sar(sar, pre)
    m0, m1 = opt.mask, sar.mask
    gt = spec.gt
    if crop:
        x0, y0, w, h = centre_crop_box(img0.shape[1], img0.shape[0], crop)
        c = gt.map(np.array([[x0 + (w - 1) / 2, y0 + (h - 1) / 2]]))[0]
        sx0, sy0, sw, sh = crop_around(img1.shape[1], img1.shape[0], c[0], c[1], w, h)
        img0, m0 = img0[y0:y0 + h, x0:x0 + w], m0[y0:y0 + h, x0:x0 + w]
        img1, m1 = img1[sy0:sy0 + sh, sx0:sx0 + sw], m1[sy0:sy0 + sh, sx0:sx0 + sw]
        gt = gt.composed(before=translation(-x0, -y0), after=translation(-sx0, -sy0))
        if gt.kind == "tiepoints" and not gt.inside(w, h).any():
            raise InputError(f"the {crop} px crop of {spec.dataset}/{spec.name} holds none of its tie points: it "
                             "cannot be scored (use a larger --crop)")
    if protocol == "aligned":
        return PreparedPair(img0, img1, m0, m1, gt)
    rng = np.random.default_rng(pair_seed(seed, f"{spec.dataset}/{spec.name}"))
    if protocol == "paper":
        d = sample_paper_deformation(img1.shape[1], img1.shape[0], rng)
        img1, m1 = warp_image(img1, m1, d.D, size=(img1.shape[1], img1.shape[0]))
        return PreparedPair(img0, img1, m0, m1, gt.composed(after=d.D), d.rotation_deg, d.scale)
    if protocol == "self-check":  # the optical itself as the SAR, deformed: the ground truth is the deformation
        d = sample_deformation(img0.shape[1], img0.shape[0], rng)
        img1, m1 = warp_image(img0, m0, d.D)
        return PreparedPair(img0, img1, m0, m1, GroundTruth(H=d.D, note="self-check: exact"), d.rotation_deg,
                            d.scale)
    d = sample_deformation(img1.shape[1], img1.shape[0], rng)
    img1, m1 = warp_image(img1, m1, d.D)
    return PreparedPair(img0, img1, m0, m1, gt.composed(after=d.D), d.rotation_deg, d.scale)


# -- worker process -------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}  # this worker process's matcher and registration config, built once by _init_worker


def _init_worker(cfg: BenchmarkConfig, method: str) -> None:
    from osreg.matchers import build_matcher
    from osreg.runtime import set_threads

    set_threads(cfg.threads)
    reg = cfg.register_config(method)
    _WORKER.update(matcher=build_matcher(reg.method), config=reg, label=method)


def _run_pair(cfg: BenchmarkConfig, dataset: str, name: str, protocol: str) -> dict[str, Any]:
    from osreg.core import fit_and_judge, register_arrays
    from osreg.types import MatchResult

    spec = next(p for p in load_pairs(cfg.data_dir, [dataset], cfg.volkov_gt) if p.name == name)
    pp = prepare_pair(spec, protocol, cfg.crop, cfg.seed)
    matcher, reg = _WORKER["matcher"], _WORKER["config"]
    row: dict[str, Any] = {"dataset": dataset, "pair": name, "protocol": protocol, "method": _WORKER["label"],
                           "rotation_deg": pp.rotation_deg, "scale": pp.scale, "error": ""}
    args = (pp.img0, pp.img1, pp.mask0, pp.mask1)
    try:
        res = register_arrays(*args, matcher, reg.geometry, reg.verdict, reg.method.template_refine)
    except InputError as exc:  # e.g. an image smaller than the matcher needs: a failed pair, not a crash
        res = fit_and_judge(*args, MatchResult.empty(), reg.geometry, reg.verdict)
        row["error"] = str(exc)
    row["time_s"] = sum(res.timings.get(k, 0.0) for k in ("match_s", "estimate_s", "refine_s"))
    row["verdict"] = res.verdict.label
    row["failed_checks"] = ";".join(res.verdict.failed_checks)  # osreg.verdict.CHECKS; empty when trusted
    row["alignment_peak"] = res.verdict.alignment_peak
    row["inliers"] = res.estimate.n_inliers
    search = res.matches.info.get("search", {})
    row["hypotheses_scored"] = search.get("hypotheses_scored", "")  # with the search stage only
    # with the global search only: its candidates verified, whether it confirmed its choice, its seconds
    global_search = search.get("kind") == "global"
    for col, key in (("hypotheses_verified", "hypotheses_verified"), ("search_confirmed", "confirmed"),
                     ("search_s", "seconds")):
        row[col] = search.get(key, "") if global_search else ""
    row["template_refine"] = res.refine_report.get("template_refine", "")  # with the template refinement only
    row["template_correction_px"] = res.refine_report.get("template_correction_px", "")
    row.update(pair_metrics(res.matches, res.estimate, pp.gt, pp.img0.shape[1], pp.img0.shape[0]))
    row["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row["gt_fit_error"] = pp.gt.global_fit_error(cfg.model, pp.img0.shape[1], pp.img0.shape[0])
    row["gt_note"] = pp.gt.note
    row["H"] = json.dumps(None if res.estimate.H is None else np.round(res.estimate.H, 8).tolist())
    return row


# -- driver ---------------------------------------------------------------------------------------------------
def pair_split(pair: PairSpec) -> str:
    """'train' for the volkov pairs TAR and PromptMID are trained on, else 'val' (held out, or never trained on)."""
    if pair.dataset != "volkov_s1s2_10m":
        return "val"
    from osreg.train.data import volkov_split  # imports torch

    return volkov_split(pair.name + ".png")


def run_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, overwrite: bool = False, progress: bool = False
                  ) -> dict[str, str]:
    """Run the benchmark and write its report; returns the written paths by kind."""
    from osreg.matchers import setup_from_spec

    for method in cfg.methods:  # every method spec is checked before any worker starts
        setup_from_spec(method)
    check_output_folder(out_dir, REPORT_FILES.values(), overwrite)
    pairs = load_pairs(cfg.data_dir, cfg.datasets, cfg.volkov_gt)
    if cfg.split != "all":
        pairs = [p for p in pairs if pair_split(p) == cfg.split]
    if cfg.max_pairs:
        by_ds: dict[str, list[PairSpec]] = {}
        for p in pairs:
            by_ds.setdefault(p.dataset, []).append(p)
        pairs = [p for ps in by_ds.values() for p in ps[: cfg.max_pairs]]
    tasks = [(p.dataset, p.name, proto) for proto in cfg.protocols for p in pairs]
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks) * len(cfg.methods), unit="pair", desc="benchmark")
    ctx = mp.get_context("spawn")
    for method in cfg.methods:
        with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            pool.submit(_init_worker, cfg, method).result()  # a method that cannot be built raises its own error here
            futures = [pool.submit(_run_pair, cfg, *t) for t in tasks]
            for f in futures:
                rows.append(f.result())
                if bar is not None:
                    bar.set_postfix_str(method)
                    bar.update(1)
    if bar is not None:
        bar.close()
    return write_report(cfg, rows, out_dir, overwrite)


def _fmt(v: Any, pct: bool = False) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{100 * v:.1f}" if pct else f"{v:.2f}"
    return str(v)


def summary_table(summaries: dict[tuple[str, str], dict[str, Any]], protocol: str, methods: tuple[str, ...]) -> str:
    cols = [("NCM", "ncm", False), ("CMR@1 %", "cmr1", True), ("CMR@3 %", "cmr3", True), ("CMR@5 %", "cmr5", True),
            ("RMSE px", "match_rmse", False), ("SR@1 %", "sr1", True), ("SR@3 %", "sr3", True),
            ("SR@5 %", "sr5", True), ("med. err (accepted) px", "median_reg_error_accepted", False),
            ("AUC@3", "auc3", True), ("AUC@5", "auc5", True), ("AUC@10", "auc10", True),
            ("accepted", "accepted", False), ("false acc.", "false_accepts", False),
            ("FA rate %", "false_accept_rate", True), ("FA beyond reach", "false_accepts_beyond_reach", False),
            ("s/pair", "s_per_pair", False),
            ("peak MB", "peak_mem_mb", False)]
    lines = ["| method | pairs | " + " | ".join(c[0] for c in cols) + " |",
             "|---" * (len(cols) + 2) + "|"]
    for m in methods:
        s = summaries.get((m, protocol))
        if not s:
            continue
        vals = []
        for _, key, pct in cols:
            v = s[key]
            vals.append(f"{v:.0f}" if key == "peak_mem_mb" else _fmt(v, pct))
        lines.append(f"| {m} | {s['pairs']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def refusal_table(rows: list[dict[str, Any]], protocol: str, methods: tuple[str, ...]) -> str:
    """Per method, the results the verdict refused under ``protocol``, by the first check they failed
    (:data:`osreg.verdict.CHECKS`), with how many of them were within ``FALSE_ACCEPT_PX`` (5 px) all the same
    ("right"); empty when none was refused."""
    lines = []
    for m in methods:
        refused = [r for r in rows if r["method"] == m and r["protocol"] == protocol and r["verdict"] != "good"]
        if not refused:
            continue
        counts: dict[str, list[int]] = {}
        for r in refused:
            check = r["failed_checks"].split(";")[0]
            counts.setdefault(check, [0, 0])
            counts[check][0] += 1
            counts[check][1] += int(r["reg_error"] <= FALSE_ACCEPT_PX)
        right = sum(c[1] for c in counts.values())
        by = ", ".join(f"{k} {n} ({ok} right)" for k, (n, ok) in sorted(counts.items(), key=lambda kv: -kv[1][0]))
        lines.append(f"| {m} | {len(refused)} | {right} | {by} |")
    if not lines:
        return ""
    return (f"| method | refused | right (<= {FALSE_ACCEPT_PX:g} px) | first failed check: refused (right) |\n"
            "|---|---|---|---|\n"
            + "\n".join(lines))


def write_report(cfg: BenchmarkConfig, rows: list[dict[str, Any]], out_dir: str | Path, overwrite: bool
                 ) -> dict[str, str]:
    """Write summary.md, per_pair.csv, summary.json and the success-rate plot into ``out_dir``, as one set."""
    summaries = {}
    per_dataset = {}
    for m in cfg.methods:
        for proto in cfg.protocols:
            sel = [r for r in rows if r["method"] == m and r["protocol"] == proto]
            summaries[(m, proto)] = summarize(sel)
            for ds in cfg.datasets:
                per_dataset[(m, proto, ds)] = summarize([r for r in sel if r["dataset"] == ds])
    md = ["# osreg benchmark\n",
          f"datasets: {', '.join(cfg.datasets)}; split: {cfg.split}; volkov ground truth: {cfg.volkov_gt}; crop: {cfg.crop or 'none'}; model: {cfg.model}; "
          f"seed: {cfg.seed}; threads: {cfg.threads}\n",
          "Metrics are defined in `osreg.eval.metrics`. SR@k: registration error over a 10x10 grid <= k px. "
          "FA: verdict 'good' with true error > 5 px (rate among accepted); FA beyond reach: those also more than "
          f"{REACH_MARGIN_PX:g} px worse than the ground truth's own global {cfg.model} fit (gt_fit_error in "
          "per_pair.csv; the others are at the model's limit, see below). s/pair: matching + robust fit, model "
          "loading excluded. peak MB: resident memory of the method's worker process.\n"]
    for proto in cfg.protocols:
        md.append(f"\n## {proto} (all datasets)\n\n" + summary_table(summaries, proto, cfg.methods) + "\n")
        for ds in cfg.datasets:
            sub = {(m, proto): per_dataset[(m, proto, ds)] for m in cfg.methods}
            md.append(f"\n### {proto} / {ds}\n\n" + summary_table(sub, proto, cfg.methods) + "\n")
        refusals = refusal_table(rows, proto, cfg.methods)
        if refusals:
            md.append(f"\n### {proto}: why results were refused\n\n" + refusals + "\n")
    notes = sorted({(r["dataset"], r["gt_note"].split(";")[0]) for r in rows})
    md.append("\n## Ground-truth notes\n\n" + "\n".join(f"- {d}: {n}" for d, n in notes) + "\n")
    md.append(reachable_note(rows, cfg.model))
    errors = [r for r in rows if r["error"]]
    if errors:
        md.append(f"\n{len(errors)} pair runs ended in an input error (scored as failures), e.g.: "
                  f"{errors[0]['method']} on {errors[0]['dataset']}/{errors[0]['pair']}: {errors[0]['error']}\n")
    text = "".join(md)
    cols = list(rows[0].keys()) if rows else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    js = {"config": asdict(cfg),
          "summary": {f"{m}/{p}": s for (m, p), s in summaries.items()},
          "per_dataset": {f"{m}/{p}/{d}": s for (m, p, d), s in per_dataset.items()}}
    with staged_folder(out_dir, REPORT_FILES.values(), overwrite) as stage:
        (stage / REPORT_FILES["summary_md"]).write_text(text, encoding="utf-8")
        (stage / REPORT_FILES["per_pair_csv"]).write_text(buf.getvalue(), encoding="utf-8")
        (stage / REPORT_FILES["summary_json"]).write_text(json.dumps(js, indent=2, default=lambda v: None),
                                                          encoding="utf-8")
        _plot(rows, cfg, stage / REPORT_FILES["plot"])
    return {k: str(Path(out_dir) / v) for k, v in REPORT_FILES.items()}


def reachable_note(rows: list[dict[str, Any]], model: str) -> str:
    """Per dataset and protocol where a global ``model`` cannot fit the ground truth within 5 px on every pair: the
    SR@5 it can reach (its least-squares fit to the ground truth itself, ``gt_fit_error`` <= 5 px). Empty when
    there is no such dataset."""
    groups: dict[tuple[str, str], list[float]] = {}
    seen = set()
    for r in rows:  # one value per pair and protocol (every method sees the same prepared pair)
        key = (r["dataset"], r["protocol"], r["pair"])
        if key not in seen:
            seen.add(key)
            groups.setdefault(key[:2], []).append(float(r["gt_fit_error"]))
    lines = []
    for (ds, proto), errs in sorted(groups.items()):
        e = np.asarray(errs)
        if np.any(e > 5.0):
            lines.append(f"- {ds} / {proto}: the least-squares global {model} fitted to the ground truth itself is "
                         f"within 5 px on {int((e <= 5).sum())} of {len(e)} pairs (its error: median {np.median(e):.1f}, "
                         f"max {e.max():.1f} px): a global {model} can be expected to reach an SR@5 of about "
                         f"{100 * (e <= 5).mean():.1f} % there")
    if not lines:
        return ""
    return "\n## What a global transform can reach\n\n" + "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], cfg: BenchmarkConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    deformed = [r for r in rows if r["protocol"] in ("large-deformation", "paper")]
    rot_bins = np.arange(0, 181, 30)
    scale_bins = np.array([0, 0.25, 0.5, 0.75, 1.0001])
    for m in cfg.methods:
        sel = [r for r in deformed if r["method"] == m]
        if not sel:
            continue
        rot = np.array([min(r["rotation_deg"] % 360, 360 - r["rotation_deg"] % 360) for r in sel])
        sc = np.array([abs(math.log2(r["scale"])) for r in sel])
        ok = np.array([r["reg_error"] <= 3 for r in sel])
        aligned = [r["reg_error"] <= 3 for r in rows if r["protocol"] == "aligned" and r["method"] == m]
        for ax, x, bins in ((axes[0], rot, rot_bins), (axes[1], sc, scale_bins)):
            idx = np.digitize(x, bins) - 1
            sr = [ok[idx == i].mean() if (idx == i).any() else np.nan for i in range(len(bins) - 1)]
            centres = list((bins[:-1] + bins[1:]) / 2)
            if aligned:  # the undeformed pairs (aligned protocol) as the zero-strength point
                centres, sr = [0.0] + centres, [float(np.mean(aligned))] + sr
            ax.plot(centres, 100 * np.array(sr), marker="o", label=m)
    axes[0].set_xlabel("rotation magnitude (degrees)")
    axes[1].set_xlabel("|log2 scale|")
    for ax in axes:
        ax.set_ylabel("SR@3px (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("success rate against deformation strength (x = 0: aligned protocol; bins: large-deformation)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)

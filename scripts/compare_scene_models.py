"""Compare local models on the same tie points of a scene-benchmark case (see scripts/scene_benchmark.py).

One scene registration gives the windows' shifts; each model is fitted to them and scored against the case's true
field at 4000 random pixels (median and 95th percentile of the distance, px):
  affine             least-squares affine of the shifts (weighted by match counts)
  tps (osreg)        affine + thin-plate spline with smoothing chosen by cross-validation, faded out away from data
  gaussian grid      affine + Gaussian-weighted average of the residual shifts (sigma = spacing)
  piecewise affine   affine + linear interpolation of the residual shifts on their Delaunay triangulation

    python scripts/compare_scene_models.py /tmp/osreg_scene_benchmark/case_8192
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.interpolate import LinearNDInterpolator

from osreg.eval.scene_case import SceneCase
from osreg.geometry import apply_transform, fit_affine
from osreg.pipeline import make_config
from osreg.scene import SceneConfig
from osreg.scene.register import register_scene


def main() -> None:
    case_dir = Path(sys.argv[1])
    case = SceneCase.from_dict(json.loads((case_dir / "case.json").read_text()))
    scene = SceneConfig()
    sreg = register_scene(str(case_dir / "optical.tif"), str(case_dir / "sar.tif"), make_config("cfog"), scene)
    H, ws = sreg.H, sreg.shifts
    p, d, w = ws.position, ws.shift, ws.count.astype(float)
    A = fit_affine(p, p + d, w)
    r = d - (apply_transform(A, p) - p)
    rng = np.random.default_rng(0)
    q = rng.uniform(64, case.size - 64, size=(4000, 2))
    truth = case.truth(q)

    def score(correction) -> tuple[float, float]:
        e = np.linalg.norm(apply_transform(H, q + correction(q)) - truth, axis=1)
        return float(np.median(e)), float(np.percentile(e, 95))

    def gaussian(x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - p[None]) ** 2).sum(-1)
        k = np.exp(-d2 / (2 * scene.spacing**2)) * w[None]
        return (k @ r) / (k.sum(1, keepdims=True) + 1e-9 * w.sum())

    tri = LinearNDInterpolator(p, r, fill_value=0.0)
    rows = {
        "affine": score(lambda x: apply_transform(A, x) - x),
        "tps (osreg)": score(sreg.model.correction),
        "gaussian grid": score(lambda x: apply_transform(A, x) - x + gaussian(x)),
        "piecewise affine": score(lambda x: apply_transform(A, x) - x + tri(x)),
    }
    print(f"{len(ws)} windows; model chosen: {sreg.model.kind} ({sreg.model.info.get('reason')})")
    print("| model | median px | p95 px |\n|---|---|---|")
    for k, (m, p95) in rows.items():
        print(f"| {k} | {m:.3f} | {p95:.3f} |")


if __name__ == "__main__":
    main()

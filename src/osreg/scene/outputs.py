"""The outputs of a scene registration, written as one set like a chip's (:func:`osreg.export.write_outputs`):
registered SAR (COG), displacement field, tie points (CSV, GeoJSON), report, quick-look."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rasterio.enums import Resampling

from osreg import __version__
from osreg.export import OUTPUT_NAMES, csv_text, geojson_doc, jsonable, output_paths, quicklook, stretch8
from osreg.geometry import decompose
from osreg.io.atomic import staged_folder
from osreg.io.windows import RasterSource
from osreg.progress import ProgressFactory, silent
from osreg.scene.config import gdal_env
from osreg.scene.register import SceneRegistration
from osreg.scene.resample import resample_to_cog, write_field, write_fused

logger = logging.getLogger(__name__)


def scene_tiepoint_rows(sreg: SceneRegistration) -> list[dict[str, Any]]:
    """One row per window match: optical and SAR pixels, map coordinates, distance from the final registration,
    confidence, and whether it made a tie point (``inlier``)."""
    m = sreg.matches
    if sreg.displacement is None or len(m) == 0:
        return []
    k0 = m.keypoints0
    fitted = sreg.displacement.map_points(k0)
    res = np.linalg.norm(m.keypoints1 - fitted, axis=1)
    sx, sy = sreg.frame.to_sar(m.keypoints1[:, 0], m.keypoints1[:, 1])
    if sreg.optical.is_georeferenced:
        t = sreg.optical.transform
        mx = t.a * (k0[:, 0] + 0.5) + t.b * (k0[:, 1] + 0.5) + t.c
        my = t.d * (k0[:, 0] + 0.5) + t.e * (k0[:, 1] + 0.5) + t.f
    else:
        mx = my = np.full(len(k0), np.nan)
    return [{"id": i, "x_opt": k0[i, 0], "y_opt": k0[i, 1], "x_sar": sx[i], "y_sar": sy[i], "map_x": mx[i],
             "map_y": my[i], "residual_px": res[i], "confidence": m.confidence[i], "inlier": int(sreg.kept[i])}
            for i in range(len(k0))]


def scene_match_json(sreg: SceneRegistration) -> dict[str, Any]:
    """The ``osreg match`` answer for a scene: the window matches in original pixels of both images, and H the
    global stage's optical px -> SAR px transform (null when untrusted, or when the CRSs differ and no plane
    transform maps optical to SAR pixels)."""
    m = sreg.matches
    sx, sy = sreg.frame.to_sar(m.keypoints1[:, 0], m.keypoints1[:, 1])
    A = sreg.frame.affine
    H = None if sreg.H is None or A is None or not sreg.verdict.good else A @ sreg.H
    return jsonable({"keypoints0": m.keypoints0, "keypoints1": np.stack([sx, sy], axis=1).reshape(-1, 2),
                     "confidence": m.confidence, "inlier": sreg.kept.astype(int),
                     "H": None if H is None else H / H[2, 2], "time_s": sum(sreg.timings.values())})


def scene_report(sreg: SceneRegistration, written: dict[str, str], run_id: str) -> dict[str, Any]:
    """The content of a scene's ``report.json`` (the chip report's keys, plus ``scene``)."""
    c = sreg.coarse
    o, s = sreg.optical, sreg.sar
    model = sreg.model
    res = sreg.residual_px
    A = sreg.frame.affine
    report = {
        "osreg_version": __version__,
        "run_id": run_id,
        "verdict": sreg.verdict.label,
        "reasons": list(sreg.verdict.reasons),
        "failed_checks": list(sreg.verdict.failed_checks),
        "confidence": sreg.verdict.confidence,
        "method": sreg.config.method.name,
        "model": model.kind if model is not None else c.estimate.model,
        "inputs": {
            "optical": {"path": o.path, "size": [o.width, o.height], "bands": o.count, "dtype": o.dtype,
                        "crs": str(o.crs) if o.crs else None},
            "sar": {"path": s.path, "size": [s.width, s.height], "bands": s.count, "dtype": s.dtype,
                    "crs": str(s.crs) if s.crs else None},
        },
        "starting_guess": "georeference (SAR resampled onto the optical grid)" if c.georeferenced else "pixel space",
        "matches": len(sreg.matches),
        "inliers": int(sreg.kept.sum()),
        "transform": {
            "optical_px_to_working_sar_px": sreg.H,
            "optical_px_to_sar_px": None if sreg.H is None or A is None else A @ sreg.H,
            "parameters": decompose(sreg.H) if sreg.H is not None else None,
            "what": "the global stage's transform at full resolution; the registration is the displacement field",
            "pixel_convention": "x = column, y = row, 0-based, (0, 0) = centre of the top-left pixel",
        },
        "scene": {
            "global_stage": {"decimated_size_optical": [c.optical.width, c.optical.height],
                             "decimated_size_sar": [c.sar.width, c.sar.height], "matches": len(c.matches),
                             "inliers": c.estimate.n_inliers, "matcher_info": dict(c.matches.info)},
            "windows": len(sreg.centres),
            "windows_with_tie_points": 0 if sreg.shifts is None else len(sreg.shifts),
            "model": None if model is None else model.kind,
            "model_choice": None if model is None else dict(model.info),
            "tie_point_residual_px": None if len(res) == 0 else {
                "median": float(np.median(res)), "p95": float(np.percentile(res, 95)), "max": float(res.max())},
            "config": vars(sreg.scene),
        },
        "runtime_s": sreg.timings,
        "config": sreg.config.to_dict(),
        "outputs": written,
    }
    return jsonable(report)


def _quicklook(registered: Path, optical: RasterSource, max_side: int = 1024) -> np.ndarray:
    """The quick-look from decimated reads of the optical scene and the registered COG (its overviews)."""
    from osreg.preprocess import prepare_optical

    f = optical.decimation(max_side)
    opt = optical.read(factor=f)
    reg = RasterSource.open(registered, "registered SAR").read(factor=f, resampling=Resampling.average)
    img = np.nanmean(reg.data, axis=0) if reg.count > 1 else reg.data[0].astype(np.float32)
    valid = reg.mask & np.isfinite(img)
    if valid.any() and np.nanmin(img[valid]) >= 0:
        img = np.log(np.maximum(img, 1e-6))
    return quicklook(stretch8(prepare_optical(opt), opt.mask), stretch8(img, valid))


def write_scene_outputs(sreg: SceneRegistration, out_dir: str | Path, overwrite: bool = False,
                        progress: ProgressFactory = silent, fuse: bool = False) -> dict[str, str]:
    """Write every output of a scene registration into ``out_dir`` as one set (see
    :func:`osreg.export.write_outputs`); untrusted: tie points and report only."""
    final = output_paths(out_dir)
    run_id = uuid.uuid4().hex
    written: dict[str, str] = {}
    tags = {"OSREG_RUN_ID": run_id, "OSREG_VERSION": __version__}
    with staged_folder(out_dir, OUTPUT_NAMES.values(), overwrite) as stage, gdal_env(sreg.scene):
        paths = output_paths(stage)
        rows = scene_tiepoint_rows(sreg)
        paths["tiepoints_csv"].write_text(csv_text(rows), encoding="utf-8")
        written["tiepoints_csv"] = str(final["tiepoints_csv"])
        crs = sreg.optical.crs if sreg.optical.is_georeferenced else None
        paths["tiepoints_geojson"].write_text(json.dumps(geojson_doc(crs, rows)), encoding="utf-8")
        written["tiepoints_geojson"] = str(final["tiepoints_geojson"])
        if sreg.verdict.good and sreg.displacement is not None:
            resample_to_cog(sreg.displacement, sreg.frame, sreg.sar, sreg.grid, paths["registered"], tags, True,
                            sreg.scene.block, sreg.sar_border(), progress)
            written["registered"] = str(final["registered"])
            write_field(paths["displacement_field"], sreg.displacement, sreg.frame, sreg.grid,
                        (sreg.sar.width, sreg.sar.height), tags, True)
            written["displacement_field"] = str(final["displacement_field"])
            if fuse:
                write_fused(sreg.optical, paths["registered"], paths["fused"], tags, True, sreg.scene.block,
                            progress)
                written["fused"] = str(final["fused"])
            if not cv2.imwrite(str(paths["quicklook"]), _quicklook(paths["registered"], sreg.optical)):
                raise OSError(f"cannot write the quick-look {final['quicklook']}")
            written["quicklook"] = str(final["quicklook"])
        written["report"] = str(final["report"])
        paths["report"].write_text(json.dumps(scene_report(sreg, written, run_id), indent=2), encoding="utf-8")
    return written


__all__ = ["scene_match_json", "scene_report", "scene_tiepoint_rows", "write_scene_outputs"]

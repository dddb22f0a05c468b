"""Outputs of a registration: registered GeoTIFF, tie points (CSV, GeoJSON), report.json, quick-look PNG."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from osreg import __version__
from osreg.geometry import apply_transform, decompose
from osreg.io.atomic import staged_folder
from osreg.io.raster import write_geotiff
from osreg.pipeline import Registration, residual_misregistration

logger = logging.getLogger(__name__)

OUTPUT_NAMES = {
    "registered": "registered_sar.tif",
    "tiepoints_csv": "tiepoints.csv",
    "tiepoints_geojson": "tiepoints.geojson",
    "report": "report.json",
    "quicklook": "quicklook.png",
    "displacement_field": "displacement_field.tif",
    "fused": "fused.tif",
}

FIELD_STEP_CHIP = 16  # lattice of the displacement field of a plane transform (exact: bilinear in between)


def output_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where :func:`write_outputs` writes each output."""
    return {k: Path(out_dir) / v for k, v in OUTPUT_NAMES.items()}


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def match_json(reg: Registration) -> dict[str, Any]:
    """The ``osreg match`` answer: keypoints in original pixels of both images, H optical px -> SAR px."""
    H, _ = reg.transform_to_sar()
    trusted = reg.verdict.good and H is not None
    return jsonable(
        {
            "keypoints0": reg.matches.keypoints0,
            "keypoints1": reg.keypoints1_in_sar(),
            "confidence": reg.matches.confidence,
            "H": (H / H[2, 2]) if trusted else None,
            "time_s": reg.timings["match_s"],
        }
    )


def build_report(reg: Registration, written: dict[str, str] | None = None, run_id: str = "") -> dict[str, Any]:
    """The content of ``report.json`` (``run_id`` also tags the registered GeoTIFF of the same run)."""
    est = reg.estimate
    H_sar, exact = reg.transform_to_sar()
    cfg = reg.config
    report = {
        "osreg_version": __version__,
        "run_id": run_id,
        "verdict": reg.verdict.label,
        "reasons": list(reg.verdict.reasons),
        "failed_checks": list(reg.verdict.failed_checks),
        "confidence": reg.verdict.confidence,
        "method": cfg.method.name,
        "model": est.model,
        "inputs": {
            "optical": {"path": reg.optical.path, "size": [reg.optical.width, reg.optical.height],
                        "bands": reg.optical.count, "dtype": reg.optical.dtype,
                        "crs": str(reg.optical.crs) if reg.optical.crs else None},
            "sar": {"path": reg.sar.path, "size": [reg.sar.width, reg.sar.height], "bands": reg.sar.count,
                    "dtype": reg.sar.dtype, "crs": str(reg.sar.crs) if reg.sar.crs else None},
        },
        "border_masked_px": dict(reg.border_masked_px),
        "starting_guess": "georeference (SAR resampled onto the optical grid)" if reg.georeferenced else "pixel space",
        "matches": len(reg.matches),
        "matcher_info": dict(reg.matches.info),  # what the method reports of itself (its search, ...)
        "template_refine": dict(reg.refine_report),
        "inliers": est.n_inliers,
        "inlier_ratio": est.n_inliers / max(len(reg.matches), 1),
        "inlier_coverage": reg.verdict.coverage,
        "alignment_peak": reg.verdict.alignment_peak,
        "residual_rmse_px": est.rmse,
        "transform": {
            "optical_px_to_working_sar_px": est.H,
            "optical_px_to_sar_px": H_sar,
            "optical_px_to_sar_px_exact": exact,
            "parameters": decompose(est.H) if est.H is not None else None,
            "pixel_convention": "x = column, y = row, 0-based, (0, 0) = centre of the top-left pixel",
        },
        "misregistration_of_georeference": residual_misregistration(reg),
        "runtime_s": reg.timings,
        "config": cfg.to_dict(),
        "outputs": written or {},
    }
    return jsonable(report)


def _map_coords(reg: Registration, xy: np.ndarray) -> np.ndarray:
    if not reg.optical.is_georeferenced or len(xy) == 0:
        return np.full((len(xy), 2), np.nan)
    return reg.optical.pixel_to_map(xy)


def tiepoint_rows(reg: Registration) -> list[dict[str, Any]]:
    """One row per match: ids, pixel and map coordinates, residual, confidence, inlier flag."""
    k0 = reg.matches.keypoints0
    k1 = reg.keypoints1_in_sar()
    m0 = _map_coords(reg, k0)
    res = reg.estimate.residuals if reg.estimate.H is not None else np.full(len(k0), np.nan)
    rows = []
    for i in range(len(k0)):
        rows.append({
            "id": i,
            "x_opt": k0[i, 0], "y_opt": k0[i, 1],
            "x_sar": k1[i, 0], "y_sar": k1[i, 1],
            "map_x": m0[i, 0], "map_y": m0[i, 1],
            "residual_px": res[i],
            "confidence": reg.matches.confidence[i],
            "inlier": int(reg.estimate.inliers[i]),
        })
    return rows


def _csv_value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}" if math.isfinite(v) else "nan"
    return v


def csv_text(rows: list[dict[str, Any]]) -> str:
    cols = ["id", "x_opt", "y_opt", "x_sar", "y_sar", "map_x", "map_y", "residual_px", "confidence", "inlier"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(v) for k, v in r.items()})
    return buf.getvalue()


def geojson_doc(crs, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """GeoJSON (RFC 7946) of the tie points: WGS84 longitude/latitude points when the optical image is
    georeferenced (``crs`` not None); otherwise features without a geometry (``null``, an unlocated feature), since
    pixel coordinates are not longitude/latitude. Pixel coordinates are always in the properties."""
    georef = crs is not None
    if georef and rows:
        from rasterio.warp import transform as warp_transform

        lon, lat = warp_transform(crs, "EPSG:4326", [r["map_x"] for r in rows], [r["map_y"] for r in rows])
    feats = []
    for i, r in enumerate(rows):
        geometry = {"type": "Point", "coordinates": [lon[i], lat[i]]} if georef else None
        feats.append({"type": "Feature", "geometry": geometry, "properties": dict(r)})
    doc = {"type": "FeatureCollection", "features": feats}
    doc["osreg_coordinates"] = (
        f"points at the WGS84 longitude/latitude of the optical tie points; map_x/map_y in {crs}"
        if georef else "no geometry: the optical image is not georeferenced; x_opt/y_opt are optical pixels"
    )
    return jsonable(doc)


def resample_sar_onto_optical(reg: Registration) -> tuple[np.ndarray, np.ndarray]:
    """The original SAR bands sampled at the registered position of every optical pixel.

    Returns ``(bands, H, W)`` float32 data (NaN outside the SAR) and the ``(H, W)`` validity mask.
    """
    o, s = reg.optical, reg.sar
    H_sar, exact = reg.transform_to_sar()
    src = np.where(s.mask[None], s.data.astype(np.float32), 0.0)
    mask_src = s.mask.astype(np.float32)
    size = (o.width, o.height)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if exact:
        warp = lambda a: cv2.warpPerspective(a, H_sar, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:  # across CRSs: exact per-pixel positions from a 16-px lattice, bilinearly interpolated
        ys, xs = np.arange(0, o.height + 15, 16), np.arange(0, o.width + 15, 16)
        gx, gy = np.meshgrid(xs, ys)
        p = apply_transform(reg.estimate.H, np.stack([gx.ravel(), gy.ravel()], 1).astype(float))
        q = reg.mapping.grid_to_sar_pixels(p).reshape(len(ys), len(xs), 2).astype(np.float32)
        # lattice node k sits at pixel 16k: pixel (x, y) reads the lattice at (x / 16, y / 16)
        px, py = np.meshgrid(np.arange(o.width, dtype=np.float32) / 16, np.arange(o.height, dtype=np.float32) / 16)
        mx = cv2.remap(np.ascontiguousarray(q[..., 0]), px, py, cv2.INTER_LINEAR)
        my = cv2.remap(np.ascontiguousarray(q[..., 1]), px, py, cv2.INTER_LINEAR)
        warp = lambda a: cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = warp(mask_src) > 0.999
    out = np.stack([warp(b) for b in src]).astype(np.float32)
    out[:, ~valid] = np.nan
    return out, valid


def stretch8(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v = img[mask & np.isfinite(img)]
    if v.size == 0:
        return np.zeros(img.shape, np.uint8)
    lo, hi = np.percentile(v, [1, 99])
    out = np.clip((np.nan_to_num(img, nan=lo) - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    out[~mask] = 0
    return out


def quicklook(optical_u8: np.ndarray, sar_u8: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """Checkerboard (left) and optical edges over the registered SAR (right), as a BGR image."""
    h, w = optical_u8.shape
    s = min(1.0, max_side / max(h, w))
    if s < 1:
        optical_u8 = cv2.resize(optical_u8, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        sar_u8 = cv2.resize(sar_u8, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        h, w = optical_u8.shape
    tile = max(16, min(h, w) // 8)
    yy, xx = np.mgrid[:h, :w]
    board = np.where(((yy // tile) + (xx // tile)) % 2 == 0, optical_u8, sar_u8)
    edges = cv2.Canny(cv2.GaussianBlur(optical_u8, (0, 0), 2.5), 60, 150) > 0
    overlay = cv2.cvtColor(sar_u8, cv2.COLOR_GRAY2BGR)
    overlay[edges] = (0, 0, 255)
    gap = np.full((h, 8, 3), 255, np.uint8)
    return np.hstack([cv2.cvtColor(board, cv2.COLOR_GRAY2BGR), gap, overlay])


def write_chip_field(reg: Registration, path: Path, run_id: str) -> None:
    """The displacement field of a chip's transform, so that ``osreg apply`` can reuse any registration."""
    from osreg.scene.field import DisplacementField, WorkingFrame
    from osreg.scene.resample import Grid, write_field

    o, s = reg.optical, reg.sar
    if reg.georeferenced:
        frame = WorkingFrame(True, o.crs, o.transform, s.crs, s.transform)
        grid = Grid(o.width, o.height, o.crs, o.transform)
    else:
        frame = WorkingFrame.pixel_space()
        grid = Grid(o.width, o.height, o.crs, o.transform) if o.is_georeferenced else Grid(o.width, o.height)
    field = DisplacementField.from_transform(reg.estimate.H, o.width, o.height, FIELD_STEP_CHIP)
    write_field(path, field, frame, grid, (s.width, s.height), {"OSREG_RUN_ID": run_id}, overwrite=True)


def write_outputs(reg: Registration, out_dir: str | Path, overwrite: bool = False, fuse: bool = False
                  ) -> dict[str, str]:
    """Write every output of a registration into ``out_dir`` as one set.

    A trusted registration gets all outputs (``fuse``: also ``fused.tif``, the optical bands and the registered SAR
    as one multi-band COG); an untrusted one only the tie points and the report (no registered image and no
    quick-look). The set is written into a hidden folder beside ``out_dir`` and replaces it as a whole
    (:func:`osreg.io.atomic.staged_folder`): an earlier run's outputs never stay beside this run's report, and an
    interrupted run leaves the earlier set untouched. The registered GeoTIFF and the report carry the same
    ``run_id``. Nothing is replaced unless ``overwrite``.

    Returns the paths written, by kind (their final places in ``out_dir``).
    """
    final = output_paths(out_dir)
    run_id = uuid.uuid4().hex
    written: dict[str, str] = {}
    with staged_folder(out_dir, OUTPUT_NAMES.values(), overwrite) as stage:
        paths = output_paths(stage)
        rows = tiepoint_rows(reg)
        paths["tiepoints_csv"].write_text(csv_text(rows), encoding="utf-8")
        written["tiepoints_csv"] = str(final["tiepoints_csv"])
        paths["tiepoints_geojson"].write_text(json.dumps(geojson_doc(reg.optical.crs, rows)), encoding="utf-8")
        written["tiepoints_geojson"] = str(final["tiepoints_geojson"])
        if reg.verdict.good:
            data, valid = resample_sar_onto_optical(reg)
            o = reg.optical
            write_geotiff(paths["registered"], data, o.crs, o.transform, nodata=float("nan"), overwrite=True,
                          descriptions=[d or f"SAR band {i + 1}" for i, d in enumerate(reg.sar.descriptions)],
                          tags={"OSREG_RUN_ID": run_id, "OSREG_VERSION": __version__})
            written["registered"] = str(final["registered"])
            opt8 = stretch8(reg.optical_image, o.mask)
            sar_img = np.where(valid, np.nanmean(data, axis=0) if data.shape[0] > 1 else data[0], np.nan)
            if reg.sar.dtype != "uint8" and np.nanmin(sar_img) >= 0:
                sar_img = np.log(np.maximum(sar_img, 1e-6))
            if not cv2.imwrite(str(paths["quicklook"]), quicklook(opt8, stretch8(sar_img, valid))):
                raise OSError(f"cannot write the quick-look {final['quicklook']}")
            written["quicklook"] = str(final["quicklook"])
            write_chip_field(reg, paths["displacement_field"], run_id)
            written["displacement_field"] = str(final["displacement_field"])
            if fuse:
                from osreg.io.windows import RasterSource
                from osreg.scene.resample import write_fused

                optical = RasterSource.open(reg.optical.path, "optical", reg.config.optical_bands)
                write_fused(optical, paths["registered"], paths["fused"], {"OSREG_RUN_ID": run_id}, overwrite=True)
                written["fused"] = str(final["fused"])
        written["report"] = str(final["report"])
        report = build_report(reg, written, run_id)
        paths["report"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    return written

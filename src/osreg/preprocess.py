"""Preprocessing: band reduction, SAR scaling, despeckling and robust contrast stretch.

Every function maps a :class:`~osreg.io.raster.Raster` (or an array) to a single-band float32 image in
``[0, 1]`` with invalid pixels set to 0, which is what every matcher takes.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.ndimage import uniform_filter

from osreg.errors import BandCountError, InputError, WeightsNotFoundError
from osreg.io.raster import Raster

logger = logging.getLogger(__name__)

SarScale = Literal["auto", "amplitude", "intensity", "db"]
SAR_SCALES = ("auto", "amplitude", "intensity", "db", "display")
DESPECKLE = ("none", "lee", "sar2sar")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into matcher input.

    Attributes:
        low_percentile, high_percentile: robust stretch limits (percent of valid pixels).
        sar_scale: how SAR values are encoded: "amplitude", "intensity" (linear), "db", "display" (already
            scaled for display, e.g. 8-bit: used as is) or "auto" (decided from the data, see
            :func:`detect_sar_scale`).
        despeckle: "none", "lee" (built-in Lee filter) or "sar2sar" (needs the deepdespeckling package).
        lee_size: Lee filter window (odd, pixels).
        lee_looks: equivalent number of looks assumed by the Lee filter.
    """

    low_percentile: float = 1.0
    high_percentile: float = 99.0
    sar_scale: str = "auto"
    despeckle: str = "none"
    lee_size: int = 7
    lee_looks: float = 4.0

    def __post_init__(self) -> None:
        if self.sar_scale not in SAR_SCALES:
            raise InputError(f"unknown SAR scale {self.sar_scale!r}; expected one of {', '.join(SAR_SCALES)}")
        if self.despeckle not in DESPECKLE:
            raise InputError(f"unknown despeckling {self.despeckle!r}; expected one of {', '.join(DESPECKLE)}")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise InputError(
                f"stretch percentiles must satisfy 0 <= low < high <= 100, got {self.low_percentile}, "
                f"{self.high_percentile}"
            )


def check_band_count(raster: Raster, role: str, method: str = "") -> None:
    """Refuse a band count that cannot be reduced to one band: 1 band is used as is, 3 (RGB, or a false-colour SAR
    rendering) are averaged; any other count is ambiguous and must be resolved by selecting bands when reading.

    Raises:
        BandCountError: for 2 or more than 3 bands.
    """
    n = raster.count
    if n in (1, 3):
        return
    flag = "--optical-bands" if role.lower() == "optical" else "--sar-band"
    who = f"method '{method}'" if method else "osreg's matchers"
    raise BandCountError(
        f"{role} image {raster.path} has {n} bands; {who} takes one band, made from 1 band or 3 (RGB) bands. "
        f"Select bands with {flag} (e.g. {flag} {'4,3,2' if flag == '--optical-bands' else '1'})"
    )


def to_single_band(raster: Raster, role: str, method: str = "") -> np.ndarray:
    """Reduce a raster to one float32 band (one band as is; three averaged with luminance weights).

    Raises:
        BandCountError: for 2 or more than 3 bands (see :func:`check_band_count`).
    """
    check_band_count(raster, role, method)
    data = raster.data.astype(np.float32)
    if raster.count == 1:
        return data[0]
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.tensordot(w, data, axes=1)


def detect_sar_scale(values: np.ndarray, dtype: str) -> str:
    """Guess how SAR values are encoded.

    Returns "display" for 8-bit data (already scaled for display: used as is), "db" when values are negative
    (backscatter in decibels), else "amplitude" (linear; amplitude and intensity differ by a factor in the
    log domain, which the stretch removes).
    """
    if dtype == "uint8":
        return "display"
    finite = values[np.isfinite(values)]
    if finite.size and np.percentile(finite, 5) < 0:
        return "db"
    return "amplitude"


def lee_filter(img: np.ndarray, size: int = 7, looks: float = 4.0) -> np.ndarray:
    """Classic Lee speckle filter on a linear-scale image.

    Args:
        img: ``(H, W)`` linear amplitude or intensity.
        size: odd window size in pixels.
        looks: equivalent number of looks (speckle coefficient of variation ``1/sqrt(looks)``).
    """
    if size < 3 or size % 2 == 0:
        raise InputError(f"Lee filter window must be odd and >= 3, got {size}")
    img = img.astype(np.float64)
    mean = uniform_filter(img, size)
    mean_sq = uniform_filter(img * img, size)
    var = np.maximum(mean_sq - mean * mean, 0.0)
    cu2 = 1.0 / looks
    var_x = np.maximum((var - mean * mean * cu2) / (1.0 + cu2), 0.0)
    weight = np.where(var > 0, var_x / np.maximum(var, 1e-12), 0.0)
    return (mean + weight * (img - mean)).astype(np.float32)


def sar2sar_normalised(x: np.ndarray, weights: str | Path | None = None) -> np.ndarray:
    """Run the SAR2SAR despeckler (deepdespeckling) on a normalised log-amplitude image (its training scale: 0 and 1
    are natural-log amplitudes -1.43 and 10.09); returns the despeckled image on the same scale."""
    import torch

    spec = importlib.util.find_spec("deepdespeckling")
    if spec is None:
        raise InputError(
            "despeckling 'sar2sar' needs the deepdespeckling package: pip install --no-deps deepdespeckling"
        )
    pkg = Path(spec.submodule_search_locations[0])
    path = Path(weights) if weights else pkg / "sar2sar" / "saved_model" / "sar2sar.pth"
    if not path.exists():
        raise WeightsNotFoundError(f"SAR2SAR weights not found; looked at {path}")
    from deepdespeckling.model import Model  # torch-only module of the package

    h, w = x.shape
    ph, pw = (-h) % 32, (-w) % 32
    a = np.pad(x.astype(np.float32), ((0, ph), (0, pw)), mode="reflect")
    model = Model("cpu", a.shape[0], a.shape[1])
    state = _load_sar2sar_state(path)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(a)).numpy().reshape(a.shape)
    return out[:h, :w].astype(np.float32)


def _load_sar2sar_state(path: Path) -> dict:
    """The SAR2SAR weights, read with ``weights_only=True``. deepdespeckling's file also holds its optimiser state,
    whose scalars are numpy scalars: exactly those two numpy constructors are allowed, nothing that runs code."""
    import numpy
    import torch

    scalar = numpy._core.multiarray.scalar if hasattr(numpy, "_core") else numpy.core.multiarray.scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), numpy.dtype,
               *{type(numpy.dtype(t)) for t in ("float32", "float64", "int64")}]
    try:
        with torch.serialization.safe_globals(allowed):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read them safely is the same error for the user
        raise WeightsNotFoundError(f"SAR2SAR weights at {path} cannot be read safely (weights_only): {exc}") from None
    if not isinstance(ck, dict) or "model_state_dict" not in ck:
        raise WeightsNotFoundError(f"{path} is not a SAR2SAR checkpoint (no model_state_dict entry)")
    return ck["model_state_dict"]


# normalisation constants of deepdespeckling (utils/constants.py): natural-log amplitude range of its training data
_SAR2SAR_MAX, _SAR2SAR_MIN = 10.089038980848645, -1.429329123112601


def _sar2sar_log_amplitude(amplitude: np.ndarray, weights: str | Path | None = None) -> np.ndarray:
    """Despeckle with SAR2SAR (deepdespeckling); returns natural-log amplitude."""
    span = _SAR2SAR_MAX - _SAR2SAR_MIN
    x = (np.log(np.clip(amplitude.astype(np.float32), 0, None) + 1e-6) - _SAR2SAR_MIN) / span
    return sar2sar_normalised(x, weights) * span + _SAR2SAR_MIN


Limits = tuple[float, float]


def stretch_limits(img: np.ndarray, mask: np.ndarray, low: float = 1.0, high: float = 99.0) -> Limits | None:
    """The ``low`` and ``high`` percentiles of the valid pixels (None when none is valid)."""
    valid = mask & np.isfinite(img)
    if not valid.any():
        return None
    lo, hi = np.percentile(img[valid], [low, high])
    return float(lo), float(max(hi, lo + 1e-6))


def stretch(img: np.ndarray, mask: np.ndarray, low: float = 1.0, high: float = 99.0,
            limits: Limits | None = None) -> np.ndarray:
    """Robust percentile stretch of the valid pixels to ``[0, 1]``; invalid pixels become 0.

    ``limits`` (e.g. the statistics of a whole scene, for its windows) replace the percentiles of ``img``.
    """
    valid = mask & np.isfinite(img)
    out = np.zeros(img.shape, dtype=np.float32)
    limits = limits or stretch_limits(img, mask, low, high)
    if limits is None:
        return out
    lo, hi = limits
    out[valid] = np.clip((img[valid] - lo) / (hi - lo), 0.0, 1.0)
    return out


def prepare_optical(raster: Raster, cfg: PreprocessConfig = PreprocessConfig(), method: str = "",
                    limits: Limits | None = None) -> np.ndarray:
    """Optical raster -> ``(H, W)`` float32 in ``[0, 1]`` (``limits``: fixed stretch limits, see :func:`stretch`)."""
    img = to_single_band(raster, "optical", method)
    return stretch(img, raster.mask, cfg.low_percentile, cfg.high_percentile, limits)


def optical_limits(raster: Raster, cfg: PreprocessConfig = PreprocessConfig(), method: str = "") -> Limits | None:
    """The stretch limits :func:`prepare_optical` would use on ``raster`` (a sample of a scene)."""
    return stretch_limits(to_single_band(raster, "optical", method), raster.mask, cfg.low_percentile,
                          cfg.high_percentile)


def resolve_sar_scale(raster: Raster, cfg: PreprocessConfig) -> str:
    """The SAR scale to use for a raster as read from its file (resampling changes the dtype, so decide first)."""
    if cfg.sar_scale != "auto":
        return cfg.sar_scale
    return detect_sar_scale(raster.data[:, raster.mask], raster.dtype)


def prepare_sar(raster: Raster, cfg: PreprocessConfig = PreprocessConfig(), method: str = "",
                limits: Limits | None = None) -> np.ndarray:
    """SAR raster -> ``(H, W)`` float32 in ``[0, 1]``, log-scaled and optionally despeckled.

    ``cfg.sar_scale`` should be resolved on the SAR as read (:func:`resolve_sar_scale`) when ``raster`` is a
    resampled copy. ``limits``: fixed stretch limits of the log-scaled values (see :func:`sar_limits`).
    """
    out, mask = _sar_values(raster, cfg, method)
    return stretch(out, mask, cfg.low_percentile, cfg.high_percentile, limits)


def sar_limits(raster: Raster, cfg: PreprocessConfig = PreprocessConfig(), method: str = "") -> Limits | None:
    """The stretch limits :func:`prepare_sar` would use on ``raster`` (a sample of a scene)."""
    out, mask = _sar_values(raster, cfg, method)
    return stretch_limits(out, mask, cfg.low_percentile, cfg.high_percentile)


def _sar_values(raster: Raster, cfg: PreprocessConfig, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The log-scaled (and despeckled) SAR values before the stretch, and their validity."""
    img = to_single_band(raster, "SAR", method)
    mask = raster.mask & np.isfinite(img)
    scale = resolve_sar_scale(raster, cfg)
    logger.debug("SAR values read as %s", scale)
    fill = float(np.median(img[mask])) if mask.any() else 0.0
    img = np.where(mask, img, fill)
    if scale == "db":
        linear = np.power(10.0, img / 10.0)  # intensity
        log_amp = None
    elif scale == "intensity":
        linear = np.sqrt(np.clip(img, 0, None))
        log_amp = None
    else:  # amplitude or display
        linear = np.clip(img, 0, None) if scale != "display" else img
        log_amp = None
    if cfg.despeckle == "lee":
        linear = lee_filter(linear, cfg.lee_size, cfg.lee_looks)
    elif cfg.despeckle == "sar2sar":
        amp = np.sqrt(linear) if scale == "db" else linear
        log_amp = _sar2sar_log_amplitude(amp)
    if log_amp is not None:
        out = log_amp
    elif scale == "display":
        out = linear
    else:
        out = np.log(np.clip(linear, 1e-10, None))
    return out, mask

"""Band reduction, SAR scale handling, stretch and despeckling."""

from __future__ import annotations

import numpy as np
import pytest

from osreg.errors import BandCountError, InputError
from osreg.io.raster import Raster
from osreg.preprocess import (
    PreprocessConfig,
    detect_sar_scale,
    lee_filter,
    prepare_optical,
    prepare_sar,
    stretch,
    to_single_band,
)


def raster(data: np.ndarray) -> Raster:
    data = data if data.ndim == 3 else data[None]
    return Raster(data, np.ones(data.shape[1:], bool), path="img.tif")


def test_band_count_message():
    with pytest.raises(BandCountError, match=r"^optical image img\.tif has 12 bands; method 'sift' takes one band, "
                                             r"made from 1 band or 3 \(RGB\) bands\. Select bands with "
                                             r"--optical-bands \(e\.g\. --optical-bands 4,3,2\)$"):
        to_single_band(raster(np.zeros((12, 8, 8), np.uint16)), "optical", "sift")
    with pytest.raises(BandCountError, match=r"SAR image img\.tif has 2 bands.*--sar-band"):
        to_single_band(raster(np.zeros((2, 8, 8), np.float32)), "SAR")


def test_rgb_luminance():
    rgb = np.stack([np.full((4, 4), v, np.float32) for v in (100, 50, 10)])
    np.testing.assert_allclose(to_single_band(raster(rgb), "optical"), 0.299 * 100 + 0.587 * 50 + 0.114 * 10, rtol=1e-6)


def test_sar_scale_detection():
    assert detect_sar_scale(np.array([1, 2, 3], np.uint8), "uint8") == "display"
    assert detect_sar_scale(np.array([-20.0, -15.0, -3.0, 1.0]), "float32") == "db"
    assert detect_sar_scale(np.array([0.01, 0.3, 2.0]), "float32") == "amplitude"


def test_db_amplitude_intensity_agree_after_stretch():
    """The same backscatter given as amplitude, intensity or dB gives the same matcher input."""
    rng = np.random.default_rng(0)
    amp = rng.gamma(2.0, 0.1, (32, 32)).astype(np.float32) + 0.01
    outs = [prepare_sar(raster(a), PreprocessConfig(sar_scale=s))
            for a, s in ((amp, "amplitude"), (amp**2, "intensity"), (20 * np.log10(amp), "db"))]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-4)


def test_stretch_range_and_mask():
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = np.ones_like(img, bool)
    mask[0] = False
    out = stretch(img, mask, 0, 100)
    assert out.min() == 0 and out.max() == 1 and np.all(out[0] == 0)


def test_lee_filter_reduces_speckle_and_keeps_mean():
    rng = np.random.default_rng(1)
    clean = np.full((128, 128), 10.0)
    speckled = clean * rng.gamma(4.0, 1 / 4.0, clean.shape)
    f = lee_filter(speckled, 7, looks=4)
    assert f.std() < 0.4 * speckled.std()
    assert abs(f.mean() - speckled.mean()) < 0.05 * speckled.mean()
    with pytest.raises(InputError, match="odd and >= 3"):
        lee_filter(speckled, 4)


def test_sar2sar_despeckling_runs_offline():
    """SAR2SAR (deepdespeckling's shipped weights) smooths fully developed speckle on a flat scene."""
    pytest.importorskip("deepdespeckling")
    from osreg.preprocess import _sar2sar_log_amplitude

    rng = np.random.default_rng(2)
    amp = (np.full((96, 96), 50.0) * np.sqrt(rng.gamma(1.0, 1.0, (96, 96)))).astype(np.float32)
    log_out = _sar2sar_log_amplitude(amp)
    assert log_out.shape == amp.shape
    assert log_out.std() < 0.4 * np.log(amp).std()  # measured: 0.21 vs 0.64
    assert abs(np.median(log_out) - np.log(50.0)) < 1.0
    out = prepare_sar(raster(amp), PreprocessConfig(sar_scale="amplitude", despeckle="sar2sar"))
    assert out.shape == (96, 96) and out.min() == 0 and out.max() == 1  # stretched to its 1st-99th percentiles


def test_bad_config_messages():
    with pytest.raises(InputError, match=r"unknown SAR scale 'linear'; expected one of auto, amplitude"):
        PreprocessConfig(sar_scale="linear")
    with pytest.raises(InputError, match="unknown despeckling 'median'"):
        PreprocessConfig(despeckle="median")
    assert prepare_optical(raster(np.ones((3, 8, 8), np.uint8))).shape == (8, 8)

"""Dense, modality-robust image descriptors shared by matchers and checks."""

from __future__ import annotations

import cv2
import numpy as np


def oriented_gradient_channels(img: np.ndarray, n_orientations: int = 9, sigma: float = 0.8,
                               normalize: bool = True) -> np.ndarray:
    """CFOG channels: absolute oriented gradients, smoothed in space and orientation, L2-normalised per pixel.

    Absolute values make the descriptor insensitive to the contrast reversals between optical and SAR.

    Args:
        img: ``(H, W)`` float image.
        n_orientations: channels over 180 degrees.
        sigma: spatial Gaussian smoothing (pixels).
        normalize: L2-normalise each pixel (False: keep the gradient magnitudes, for callers that weight pixels by
            their structure).

    Returns:
        ``(n_orientations, H, W)`` float32.
    """
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.7)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    c = np.empty((n_orientations, *img.shape), np.float32)
    for k in range(n_orientations):
        t = np.pi * k / n_orientations
        g = cv2.addWeighted(gx, float(np.cos(t)), gy, float(np.sin(t)), 0.0)
        cv2.GaussianBlur(np.abs(g, out=g), (0, 0), sigma, dst=c[k])
    # circular [1, 2, 1] / 4 across orientations, written into one array (no rolled copies)
    if n_orientations < 3:
        out = 0.5 * c + 0.25 * (np.roll(c, 1, axis=0) + np.roll(c, -1, axis=0))
    else:
        out = 0.5 * c
        out[1:-1] += 0.25 * (c[:-2] + c[2:])
        out[0] += 0.25 * (c[-1] + c[1])
        out[-1] += 0.25 * (c[-2] + c[0])
    if normalize:
        out /= np.sqrt(np.einsum("khw,khw->hw", out, out)) + 1e-6
    return out

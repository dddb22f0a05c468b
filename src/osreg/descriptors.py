"""Dense, modality-robust image descriptors shared by matchers and checks."""

from __future__ import annotations

import cv2
import numpy as np


def oriented_gradient_channels(img: np.ndarray, n_orientations: int = 9, sigma: float = 0.8) -> np.ndarray:
    """CFOG channels: absolute oriented gradients, smoothed in space and orientation, L2-normalised per pixel.

    Absolute values make the descriptor insensitive to the contrast reversals between optical and SAR.

    Args:
        img: ``(H, W)`` float image.
        n_orientations: channels over 180 degrees.
        sigma: spatial Gaussian smoothing (pixels).

    Returns:
        ``(n_orientations, H, W)`` float32.
    """
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.7)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    chans = []
    for k in range(n_orientations):
        t = np.pi * k / n_orientations
        g = np.abs(np.cos(t) * gx + np.sin(t) * gy)
        chans.append(cv2.GaussianBlur(g, (0, 0), sigma))
    c = np.stack(chans)
    c = 0.25 * np.roll(c, 1, axis=0) + 0.5 * c + 0.25 * np.roll(c, -1, axis=0)  # circular [1, 2, 1] / 4
    c /= np.sqrt((c * c).sum(axis=0, keepdims=True)) + 1e-6
    return c.astype(np.float32)

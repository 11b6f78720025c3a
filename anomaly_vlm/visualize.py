"""Heatmap overlays that a quality engineer can read at a glance."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def overlay(image: Image.Image, anomaly_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a JET heatmap of `anomaly_map` (0..1, absolute, not rescaled per image) over `image`.

    Absolute scaling keeps a clean part blue instead of stretching its noise to red.
    """
    width, height = image.size
    heat = cv2.resize(np.clip(anomaly_map, 0, 1).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colored
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))

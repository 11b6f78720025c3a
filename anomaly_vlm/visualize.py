"""Heatmap overlays that a quality engineer can read at a glance."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def overlay(image: Image.Image, anomaly_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a JET heatmap of `anomaly_map` (0..1, absolute, not rescaled per image) over `image`.

    Absolute scaling keeps a clean part blue instead of stretching its noise to red.
    """
    width, height = image.size
    heat = cv2.resize(np.clip(anomaly_map, 0, 1).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colored
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def annotate(image: Image.Image, anomaly_map: np.ndarray | None, regions: list, alpha: float = 0.45) -> Image.Image:
    """The heatmap overlay with each region's box numbered as in the findings table (1 = strongest)."""
    shown = overlay(image, anomaly_map, alpha) if anomaly_map is not None else image.convert("RGB")
    draw = ImageDraw.Draw(shown)
    width = max(2, round(max(shown.size) / 250))
    font = ImageFont.load_default(size=max(12, round(max(shown.size) / 28)))
    for number, region in enumerate(regions, 1):
        x0, y0, x1, y1 = region.box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 255, 255), width=width + 2)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(220, 0, 0), width=width)
        label = str(number)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tx, ty = x0, max(0, y0 - (bottom - top) - 2 * width)
        draw.rectangle((tx, ty, tx + right - left + 2 * width, ty + bottom - top + 2 * width), fill=(220, 0, 0))
        draw.text((tx + width - left, ty + width - top), label, fill=(255, 255, 255), font=font)
    return shown


def score_histogram(scores: list[float], thresholds: list[float], size: tuple[int, int] = (640, 260)) -> Image.Image:
    """Image scores of a batch against the FAIL threshold (and the REVIEW one); a gap at a line separates cleanly."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    try:
        axes.hist(scores, bins=np.linspace(0, 1, 26), color="#4a7bb7", edgecolor="white")
        for threshold, name, colour in zip(thresholds, ("FAIL", "REVIEW"), ("#c0392b", "#d4a017")):
            axes.axvline(threshold, color=colour, linestyle="--", label=f"{name} at {threshold:.2f}")
        axes.set_xlim(0, 1)
        axes.set_xlabel("image anomaly score")
        axes.set_ylabel("images")
        axes.legend(loc="upper right", frameon=False)
        figure.tight_layout()
        figure.canvas.draw()
        return Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
    finally:
        plt.close(figure)

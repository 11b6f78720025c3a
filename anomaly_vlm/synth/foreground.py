"""Where on an image a simulated defect may land.

A defect on the background of an object image teaches nothing and makes a wrong
label, so objects are separated from their plain background. Industrial photos put
one part on a uniform backdrop, which the border of the image shows: pixels far in
colour from the border are the part.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

ForegroundKind = Literal["object", "texture"]

WORK_SIDE = 128
"""Side of the downscaled copy the estimate is made on; the mask is upscaled after."""
MIN_COVER, MAX_COVER = 0.02, 0.98
"""Outside these fractions of the image the estimate is implausible: use the whole image."""
KEEP_FRACTION = 0.25
"""Components at least this fraction of the largest are kept too (several parts in one view)."""
HOLE_FRACTION = 0.05
"""Holes smaller than this fraction of the part are filled; larger ones (a nut's bore) stay background."""


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the outermost pixels: the backdrop of an object image, float32 (3,)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(np.float32)


def _fill_small_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background regions below HOLE_FRACTION of the part: specular spots, dark print."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    height, width = mask.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    inside = (left > 0) & (top > 0) & (right < width) & (bottom < height)
    small = stats[:, cv2.CC_STAT_AREA] < HOLE_FRACTION * mask.sum()
    holes = np.flatnonzero(inside & small)
    return mask | np.isin(labels, holes[holes > 0])


def _largest_components(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= KEEP_FRACTION * areas.max())
    return np.isin(labels, keep)


def estimate_foreground(image: np.ndarray, kind: ForegroundKind) -> np.ndarray:
    """HxW bool mask of the part on an "object" image; all True for a "texture" (or when unsure)."""
    height, width = image.shape[:2]
    everywhere = np.ones((height, width), dtype=bool)
    if kind == "texture":
        return everywhere
    if kind != "object":
        raise ValueError(f"unknown image kind {kind!r}; choose 'object' or 'texture'")

    scale = min(1.0, WORK_SIDE / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    difference = small.astype(np.float32) - border_colour(small)
    distance = np.sqrt((difference * difference).sum(axis=2))
    top = float(distance.max())
    if top < 1.0:
        return everywhere
    levels = cv2.convertScaleAbs(distance, alpha=255.0 / top)
    _, binary = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    mask = _fill_small_holes(_largest_components(binary.astype(bool)))

    if scale < 1:
        mask = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR) > 127
    cover = mask.mean()
    return mask if MIN_COVER <= cover <= MAX_COVER else everywhere

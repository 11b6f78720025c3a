"""Regions from masks and anomaly maps: connected components, boxes and grid locations in words."""

from __future__ import annotations

import cv2
import numpy as np

from .types import Region

_ROWS = ("top", "", "bottom")
_COLUMNS = ("left", "", "right")
LOCATIONS = tuple(" ".join(w for w in (r, c) if w) or "center" for r in _ROWS for c in _COLUMNS)


def grid_location(x: float, y: float, width: int, height: int) -> str:
    """The 3x3 grid cell of point (x, y) in words: "top left", "top", ..., "center", ..., "bottom right"."""
    column = min(int(3 * x / width), 2)
    row = min(int(3 * y / height), 2)
    return LOCATIONS[3 * row + column]


def make_region(box: tuple[int, int, int, int], width: int, height: int, area: int,
                peak: float = 1.0, mean: float = 1.0) -> Region:
    """A region for a pixel box; the location is that of the box centre."""
    x0, y0, x1, y1 = box
    return Region(
        box=(int(x0), int(y0), int(x1), int(y1)),
        box_norm=(x0 / width, y0 / height, x1 / width, y1 / height),
        area_fraction=area / (width * height),
        location=grid_location((x0 + x1) / 2, (y0 + y1) / 2, width, height),
        peak_score=float(peak),
        mean_score=float(mean),
    )


def regions_from_mask(mask: np.ndarray, scores: np.ndarray | None = None) -> list[Region]:
    """One region per 8-connected component of `mask`, largest first.

    With `scores` (an anomaly map of the same shape), each region carries its peak
    and mean score; without, both are 1 (ground truth).
    """
    height, width = mask.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    regions = []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        peak = mean = 1.0
        if scores is not None:
            values = scores[labels == label]
            peak, mean = float(values.max()), float(values.mean())
        regions.append(make_region((x, y, x + w, y + h), width, height, int(area), peak, mean))
    return sorted(regions, key=lambda r: -r.area_fraction)

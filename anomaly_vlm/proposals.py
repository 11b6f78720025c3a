"""Regions from masks and anomaly maps: connected components, boxes and grid locations in words."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from scipy import ndimage

from .attributes import box_mask, measure
from .types import Region
from .vocabulary import LOCATIONS


def grid_location(x: float, y: float, width: int, height: int) -> str:
    """The 3x3 grid cell of point (x, y) in words: "top left", "top", ..., "center", ..., "bottom right"."""
    column = min(int(3 * x / width), 2)
    row = min(int(3 * y / height), 2)
    return LOCATIONS[3 * row + column]


def make_region(box: tuple[int, int, int, int], width: int, height: int, area: float,
                peak: float = 1.0, mean: float = 1.0) -> Region:
    """A region for a pixel box; the location is that of the box centre.

    `area` is in pixels of the width x height image; it may be fractional when it
    was counted on a resized map. Area and mean are clamped against the rounding of
    those rescaled sums: a region never exceeds the image, nor its mean its peak.
    """
    x0, y0, x1, y1 = box
    return Region(
        box=(int(x0), int(y0), int(x1), int(y1)),
        box_norm=(x0 / width, y0 / height, x1 / width, y1 / height),
        area_fraction=min(1.0, area / (width * height)),
        location=grid_location((x0 + x1) / 2, (y0 + y1) / 2, width, height),
        peak_score=float(peak),
        mean_score=min(float(mean), float(peak)),
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


@dataclass
class ProposalConfig:
    """How an anomaly map becomes region proposals."""

    min_area_fraction: float = field(
        default=0.0005, metadata={"help": "drop regions smaller than this fraction of the image"})
    merge_distance: float = field(
        default=0.02, metadata={"help": "merge components closer than this fraction of the shorter image side"})
    top_k: int = field(default=5, metadata={"help": "keep this many regions, highest peak score first"})
    max_side: int = field(
        default=1024, metadata={"help": "longest side the map is resized to; boxes are scaled to image pixels"})
    attributes: bool = field(default=True, metadata={
        "help": "measure each region's look (shape, size, contrast, colour, texture) for the findings, the tables "
                "and the assistant; off: only where and how strong"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_fraction <= 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1], got {self.min_area_fraction}")
        if self.merge_distance < 0:
            raise ValueError(f"merge_distance must be >= 0, got {self.merge_distance}")
        if self.top_k < 1 or self.max_side < 1:
            raise ValueError(f"top_k and max_side must be >= 1, got {self.top_k} and {self.max_side}")


def _check_map(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    scores = np.asarray(anomaly_map, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"anomaly map must be a non-empty 2D (H, W) array, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("anomaly map contains NaN or infinite values")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return scores


def _working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The image size capped to `max_side` on the longer side, keeping the aspect ratio."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def look_level(anomaly_map: np.ndarray, image_score: float, threshold: float) -> float:
    """The level regions are proposed at: `threshold`, or lower for a part scored over it whose map stays under it.

    A fused image score is the mean of its modes' peaks, which can cross a threshold
    that their mean map crosses nowhere (the modes peak in different places). Such a
    part is still sent to review or failed, and a person needs a place to look: the
    map's strongest area, cut at half its peak's height above the map's median.
    """
    peak, median = float(np.max(anomaly_map)), float(np.median(anomaly_map))
    if image_score < threshold or peak >= threshold or peak <= median:  # a flat map has no area to point at
        return threshold
    return (median + peak) / 2


def propose(anomaly_map: np.ndarray, threshold: float, config: ProposalConfig = ProposalConfig(),
            image_size: tuple[int, int] | None = None) -> list[Region]:
    """Regions where `anomaly_map` >= `threshold`, strongest first, boxes in pixels of the image.

    The map is resized bilinearly to `image_size` (width, height; the map's own size
    when None), capped at `config.max_side` for speed; boxes found at the capped size
    are scaled out to image pixels, rounding outwards so they still cover the region.
    Components within `config.merge_distance` of each other are joined by dilating
    the mask before labelling, but area and scores count only the pixels above the
    threshold, so merging never inflates a region.
    """
    scores = _check_map(anomaly_map, threshold)
    width, height = image_size or (scores.shape[1], scores.shape[0])
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be a positive (width, height), got {image_size}")
    work_width, work_height = _working_size(width, height, config.max_side)
    if scores.shape != (work_height, work_width):
        scores = cv2.resize(scores, (work_width, work_height), interpolation=cv2.INTER_LINEAR)
    mask = (scores >= threshold).astype(np.uint8)

    # pixels whose gap is at most `distance` touch after dilating by a (distance + 1) square
    distance = round(config.merge_distance * min(work_width, work_height))
    joined = cv2.dilate(mask, np.ones((distance + 1, distance + 1), np.uint8)) if distance else mask
    count, groups = cv2.connectedComponents(joined, connectivity=8)
    groups = groups * mask
    areas = np.bincount(groups.ravel(), minlength=count)[1:]
    means = np.bincount(groups.ravel(), weights=scores.ravel(), minlength=count)[1:] / areas
    peaks = ndimage.maximum(scores, groups, np.arange(1, count))

    pixels = work_width * work_height
    scale_area = width * height / pixels
    regions = []
    for (rows, cols), area, peak, mean in zip(ndimage.find_objects(groups), areas, peaks, means):
        if area / pixels < config.min_area_fraction:
            continue
        box = (cols.start * width // work_width, rows.start * height // work_height,
               min(width, -(-cols.stop * width // work_width)), min(height, -(-rows.stop * height // work_height)))
        regions.append(make_region(box, width, height, float(area * scale_area), peak, mean))
    regions.sort(key=lambda r: (-r.peak_score, -r.area_fraction))
    return regions[:config.top_k]


def with_attributes(regions: list[Region], image, anomaly_map: np.ndarray, threshold: float,
                    image_size: tuple[int, int] | None = None) -> list[Region]:
    """The regions with their look measured on `image` (`attributes`; see `anomaly_vlm.attributes`).

    A region's mask is the map, resized bilinearly to the image as `propose` resizes
    it, at or above `threshold` inside the region's box (the whole box if no pixel of
    it is). `image` is a PIL image or an H x W x 3 array; `image_size` (width, height)
    is the size the boxes are in pixels of, the image's own size when None.
    """
    if not regions:
        return list(regions)
    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    height, width = pixels.shape[:2]
    scores = _check_map(anomaly_map, threshold)
    if scores.shape != (height, width):
        scores = cv2.resize(scores, (width, height), interpolation=cv2.INTER_LINEAR)
    box_width, box_height = image_size or (width, height)
    measured = []
    for region in regions:
        x0, y0, x1, y1 = region.box
        box = (x0 * width // box_width, y0 * height // box_height,
               max(x0 * width // box_width + 1, -(-x1 * width // box_width)),
               max(y0 * height // box_height + 1, -(-y1 * height // box_height)))
        inside = box_mask((height, width), box)
        mask = inside & (scores >= threshold)
        measured.append(replace(region, attributes=measure(pixels, mask if mask.any() else inside)))
    return measured

"""What a region looks like, measured from the image and its mask: shape, size, contrast, colour and texture.

These are evidence the assistant can reason with ("an elongated, darker mark with more
edges" reads like a scratch or a crack; "a compact, brighter, reddish blob" like a
stain), and the same `measure` runs on the localizer's regions at inspection time and
on simulated regions when instruction data is synthesized, so the assistant is tuned
on the evidence it will later be shown.

Each measure compares the region with a ring of pixels around it:

- shape, from the region's pixels: the ratio of its principal axes (square root of
  the eigenvalue ratio of the second moments) and its solidity (area over the area of
  its convex hull). Elongated when the axis ratio is at least `ELONGATED_RATIO`, with
  the major axis's direction in words; otherwise compact when solid, else irregular.
- size: the area as a fraction of the image, in four words.
- contrast: mean CIE L* (0..100) inside minus in the ring.
- colour shift: the distance between the mean a*b* chroma inside and in the ring, and
  the direction of that shift as a hue word when it is strong.
- texture: root-mean-square grey-level gradient inside over that of the ring (edges
  of the region's own outline count: a thin dark line is "more edges").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

SHAPES = ("elongated", "compact", "irregular")
ORIENTATIONS = ("horizontal", "vertical", "diagonal")
SIZES = ("tiny", "small", "medium", "large")
CONTRASTS = ("darker", "brighter", "similar")
HUES = ("reddish", "yellowish", "greenish", "bluish", "none")
TEXTURES = ("more edges", "smoother", "similar")

ELONGATED_RATIO = 2.5
"""Principal-axis ratio from which a region is elongated (a 2.5:1 ellipse or longer)."""
COMPACT_SOLIDITY = 0.75
"""Solidity (area / convex hull area) from which a region that is not elongated is compact."""
SIZE_LIMITS = (0.001, 0.01, 0.05)
"""Upper area fractions of tiny, small and medium; larger is large."""
CONTRAST_MIN = 2.0
"""|L* difference| below this (0..100 scale) is similar brightness."""
COLOUR_MIN = 6.0
"""a*b* chroma distance from which the colour shift is strong enough to name a hue."""
TEXTURE_RATIO = 1.5
"""Gradient-energy ratio above which a region has more edges (below its inverse: smoother)."""
_GRADIENT_FLOOR = 1.0
"""Grey levels per pixel added to both gradients, so flat images do not give huge ratios from noise."""


def size_word(area_fraction: float) -> str:
    """tiny, small, medium or large, by fraction of the image."""
    for word, limit in zip(SIZES, SIZE_LIMITS):
        if area_fraction < limit:
            return word
    return SIZES[-1]


@dataclass(frozen=True)
class RegionAttributes:
    """The look of one region, measured (see the module docstring); words for people, numbers for checks.

    `orientation` is None unless the shape is elongated; `angle` is the major axis's
    direction in degrees, 0 horizontal and counter-clockwise positive as the image is
    seen (so 45 rises to the right). `luminance_difference` is inside minus ring in
    L* (0..100), `colour_shift` the a*b* distance, `texture_ratio` inside over ring.
    """

    shape: str
    size: str
    contrast: str
    hue: str
    texture: str
    orientation: str | None = None
    elongation: float = 1.0
    solidity: float = 1.0
    angle: float = 0.0
    luminance_difference: float = 0.0
    colour_shift: float = 0.0
    texture_ratio: float = 1.0

    def __post_init__(self) -> None:
        for name, allowed in (("shape", SHAPES), ("size", SIZES), ("contrast", CONTRASTS), ("hue", HUES),
                              ("texture", TEXTURES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)} or None, got {self.orientation!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RegionAttributes:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def describe(self, short: bool = False) -> str:
        """A phrase: "elongated diagonal, small, darker than its surroundings, no colour shift, more edges".

        `short` drops "than its surroundings" (findings blocks and tables, where every
        region is compared with its surroundings).
        """
        shape = f"{self.shape} {self.orientation}" if self.orientation else self.shape
        surroundings = "" if short else " than its surroundings"
        contrast = ("similar brightness" if self.contrast == "similar" else f"{self.contrast}{surroundings}")
        colour = "no colour shift" if self.hue == "none" else self.hue
        texture = "similar texture" if self.texture == "similar" else self.texture
        return ", ".join((shape, self.size, contrast, colour, texture))


def _shape(mask: np.ndarray) -> tuple[str, str | None, float, float, float]:
    """Shape word, orientation word, axis ratio, solidity and major-axis angle of a boolean mask."""
    ys, xs = np.nonzero(mask)
    area = xs.size
    # second moments of pixel centres; a pixel is a unit square, which adds 1/12 to each axis variance
    cov = np.cov(np.stack([xs, ys]).astype(np.float64), bias=True) if area > 1 else np.zeros((2, 2))
    cov = cov + np.eye(2) / 12.0
    values, vectors = np.linalg.eigh(cov)
    elongation = math.sqrt(values[1] / values[0])
    major_x, major_y = vectors[:, 1]
    angle = math.degrees(math.atan2(-major_y, major_x))   # image y points down; people read y up
    angle = (angle + 90.0) % 180.0 - 90.0                  # an axis, not a direction: -90..90
    points = np.stack([xs, ys], axis=1).astype(np.int32)
    hull = cv2.convexHull(points) if area >= 3 else points.reshape(-1, 1, 2)
    # the hull of pixel centres misses half a pixel all round: add half its perimeter and one pixel (Pick)
    hull_area = cv2.contourArea(hull) + cv2.arcLength(hull, True) / 2 + 1 if len(hull) >= 2 else float(area)
    solidity = min(1.0, area / hull_area)
    if elongation >= ELONGATED_RATIO:
        folded = abs(angle)
        orientation = "horizontal" if folded < 22.5 else "vertical" if folded > 67.5 else "diagonal"
        return "elongated", orientation, elongation, solidity, angle
    return ("compact" if solidity >= COMPACT_SOLIDITY else "irregular"), None, elongation, solidity, angle


def _ring_width(area: int, shape: tuple[int, ...]) -> int:
    """The ring's width: half the side of a square of the region's area, 3 to a tenth of the image's longer side."""
    return int(np.clip(round(0.5 * math.sqrt(area)), 3, max(3, 0.1 * max(shape))))


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels around the region: a band about half the region's size wide, at least 3 pixels.

    Where the band is empty (the region fills its surroundings) it is every pixel outside
    the region, and where there is none of those the region itself: no difference.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    return ring if ring.any() else ~mask if (~mask).any() else mask


def _crop(image: np.ndarray, mask: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask cut to the region's box plus `margin` pixels, so big images stay cheap."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    y0, y1 = max(0, ys.min() - margin), min(height, ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(width, xs.max() + 1 + margin)
    return image[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def _check(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be an H x W x 3 RGB array, got shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"region mask shape {mask.shape} does not match the image's {image.shape[:2]}")
    if not mask.any():
        raise ValueError("region mask is empty")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image[..., :3], mask


def _hue_word(da: float, db: float) -> str:
    """The direction of a chroma shift: +a* red, +b* yellow, -a* green, -b* blue."""
    angle = math.degrees(math.atan2(db, da)) % 360.0
    return ("reddish", "yellowish", "greenish", "bluish")[int(((angle + 45.0) % 360.0) // 90.0)]


def measure(image: np.ndarray, region_mask: np.ndarray) -> RegionAttributes:
    """The attributes of the region `region_mask` (H x W bool) of `image` (H x W x 3 uint8 RGB)."""
    image, mask = _check(image, region_mask)
    area_fraction = float(mask.sum()) / mask.size
    shape, orientation, elongation, solidity, angle = _shape(mask)
    ring_width = _ring_width(int(mask.sum()), mask.shape)
    image, mask = _crop(image, mask, ring_width + 2)   # + 2: the gradient's reach beyond the ring
    ring = _ring(mask, ring_width)

    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)   # L 0..100, a and b about -128..127
    inside, around = lab[mask].mean(axis=0), lab[ring].mean(axis=0)
    luminance = float(inside[0] - around[0])
    contrast = "similar" if abs(luminance) < CONTRAST_MIN else "darker" if luminance < 0 else "brighter"
    da, db = float(inside[1] - around[1]), float(inside[2] - around[2])
    shift = math.hypot(da, db)
    hue = _hue_word(da, db) if shift >= COLOUR_MIN else "none"

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    energy = gx * gx + gy * gy
    ratio = ((math.sqrt(float(energy[mask].mean())) + _GRADIENT_FLOOR)
             / (math.sqrt(float(energy[ring].mean())) + _GRADIENT_FLOOR))
    texture = "more edges" if ratio >= TEXTURE_RATIO else "smoother" if ratio <= 1 / TEXTURE_RATIO else "similar"

    return RegionAttributes(shape, size_word(area_fraction), contrast, hue, texture, orientation,
                            round(elongation, 3), round(solidity, 3), round(angle, 1), round(luminance, 2),
                            round(shift, 2), round(ratio, 3))


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A boolean H x W mask, true inside the box (x0, y0, x1, y1), ends exclusive."""
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return mask


def ellipse_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The ellipse inscribed in the box, as a boolean H x W mask (never empty for a non-empty box)."""
    x0, y0, x1, y1 = box
    ys, xs = np.ogrid[:shape[0], :shape[1]]
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
    if not mask.any():
        mask[min(max(int(cy), 0), shape[0] - 1), min(max(int(cx), 0), shape[1] - 1)] = True
    return mask

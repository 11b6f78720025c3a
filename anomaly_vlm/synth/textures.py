"""Textures that fill simulated defects, and fully procedural normal images.

DRAEM fills its defects with DTD photographs; `FolderTextures` reads such a folder,
and `ProceduralTextures` stands in when none is at hand, so a recipe runs offline
and without downloads. `procedural_normal` goes one step further and draws the
normal image itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Literal, Protocol

import cv2
import numpy as np

from ..errors import DatasetError
from ..io import IMAGE_SUFFIXES, is_image_file, load_image
from .perlin import perlin_noise

NormalKind = Literal["object", "texture"]


class TextureSource(Protocol):
    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """An HxWx3 uint8 texture of `shape` = (H, W)."""
        ...


def _normalize(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) * (1.0 / max(high - low, 1e-6))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Perlin noise in [0, 1]; computed at 256 px a side at most and resized, since it is smooth."""
    height, width = shape
    small = (max(1, min(height, 256)), max(1, min(width, 256)))
    noise = _normalize(perlin_noise(small, cells, rng))
    if small != (height, width):
        noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    return noise


def _streaks(rng: np.random.Generator, shape: tuple[int, int], length: float, angle: float) -> np.ndarray:
    """White noise smeared along `angle` (degrees) over `length` pixels: fibres, grain, brushing."""
    height, width = shape
    side = max(height, width)
    work = max(8, min(side, 256))
    factor = side / work
    noise = rng.random((work, work), dtype=np.float32)
    kernel = max(1, int(round(length / factor)))
    noise = _normalize(cv2.blur(noise, (kernel, 1), borderType=cv2.BORDER_REFLECT))
    # One warp rotates the smeared noise and scales it up to the requested size.
    rotation = cv2.getRotationMatrix2D((work / 2, work / 2), angle, factor)
    rotation[:, 2] += (width / 2 - work / 2, height / 2 - work / 2)
    return cv2.warpAffine(noise, rotation, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _along(shape: tuple[int, int], angle: float, scale: float = 1.0) -> np.ndarray:
    """Each pixel's position along direction `angle` (radians), times `scale`: (H, W) float32."""
    y = np.arange(shape[0], dtype=np.float32)[:, None] * np.float32(math.sin(angle) * scale)
    x = np.arange(shape[1], dtype=np.float32)[None, :] * np.float32(math.cos(angle) * scale)
    return x + y


def _noise_pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return _smooth_field(rng, shape, tuple(int(c) for c in rng.integers(2, 17, size=2)))


def _stripes_pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    period = max(3.0, rng.uniform(0.015, 0.12) * min(shape))
    wave = np.sin(_along(shape, rng.uniform(0, math.pi), 2 * math.pi / period))
    sharpness = np.float32(rng.uniform(1.0, 6.0))
    return np.clip(wave * (sharpness / 2) + np.float32(0.5), 0, 1)


def _checker_pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    cell = max(2, int(rng.uniform(0.03, 0.15) * min(shape)))
    offset = rng.integers(0, cell, size=2)
    rows = ((np.arange(shape[0]) + offset[0]) // cell) % 2
    cols = ((np.arange(shape[1]) + offset[1]) // cell) % 2
    return (rows[:, None] ^ cols[None, :]).astype(np.float32)


def _fibres_pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return _streaks(rng, shape, rng.uniform(0.05, 0.4) * max(shape), rng.uniform(0, 180))


_PATTERNS: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "noise": _noise_pattern,
    "stripes": _stripes_pattern,
    "checker": _checker_pattern,
    "fibres": _fibres_pattern,
}


def _palette(colours: np.ndarray) -> np.ndarray:
    """A 256-entry colour ramp through `colours` (k x 3), shaped for cv2.LUT."""
    stops = np.linspace(0, 255, len(colours))
    ramp = np.stack([np.interp(np.arange(256), stops, colours[:, c]) for c in range(3)], axis=1)
    return np.clip(ramp + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)


def _colourize(values: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] through a palette; cv2.LUT is the fastest gather for this."""
    index = cv2.convertScaleAbs(values, alpha=255.0)
    return cv2.LUT(cv2.merge([index, index, index]), palette)


class ProceduralTextures:
    """Random colour fields: Perlin noise, stripes, checker or fibres, sometimes mixed with noise.

    Cheap enough (a few ms at 512 px) to draw a fresh texture for every defect.
    """

    def __init__(self, kinds: tuple[str, ...] = tuple(_PATTERNS)):
        unknown = [k for k in kinds if k not in _PATTERNS]
        if unknown or not kinds:
            raise ValueError(f"unknown texture kinds {unknown}; choose from {', '.join(_PATTERNS)}")
        self.kinds = tuple(kinds)

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        shape = (int(shape[0]), int(shape[1]))
        values = _PATTERNS[self.kinds[rng.integers(len(self.kinds))]](rng, shape)
        if rng.random() < 0.5:
            weight = np.float32(rng.uniform(0.2, 0.6))
            values = values * (1 - weight) + _noise_pattern(rng, shape) * weight
        colours = rng.uniform(0, 255, size=(int(rng.integers(2, 4)), 3))
        return _colourize(values, _palette(colours))


class FolderTextures:
    """Texture photographs (e.g. DTD) from a folder and its subfolders, read when sampled."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: texture folder not found")
        self.files = sorted(p for p in self.path.rglob("*") if is_image_file(p))
        if not self.files:
            raise DatasetError(f"{self.path}: no texture images ({', '.join(IMAGE_SUFFIXES)}) in this folder")

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """A random crop with the aspect of `shape`, 50-100 % of the largest one, resized to it."""
        height, width = int(shape[0]), int(shape[1])
        image = np.asarray(load_image(self.files[rng.integers(len(self.files))]))
        source_h, source_w = image.shape[:2]
        fit = min(source_h / height, source_w / width) * rng.uniform(0.5, 1.0)
        crop_h, crop_w = max(1, min(source_h, round(height * fit))), max(1, min(source_w, round(width * fit)))
        top = int(rng.integers(0, source_h - crop_h + 1))
        left = int(rng.integers(0, source_w - crop_w + 1))
        crop = image[top : top + crop_h, left : left + crop_w]
        interpolation = cv2.INTER_AREA if crop_h > height else cv2.INTER_LINEAR
        return cv2.resize(crop, (width, height), interpolation=interpolation)


def _shaded(base: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Multiply an RGB colour by a per-pixel brightness field: (H, W) x (3,) -> (H, W, 3)."""
    return shade[..., None] * base.astype(np.float32)[None, None, :]


def _object_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A part drawn from its signed distance, so its outline is anti-aliased at any size."""
    dark = rng.random() < 0.5
    level = rng.uniform(10, 50) if dark else rng.uniform(185, 240)
    background = np.clip(level + rng.normal(0, 4, size=3), 0, 255)
    grey = rng.uniform(110, 225) if dark else rng.uniform(40, 150)
    tint = rng.uniform(0.55, 1.0, size=3) if rng.random() < 0.6 else np.ones(3)
    body = grey * tint / tint.max()

    centre = size / 2 + rng.normal(0, 0.02 * size, size=2)
    y = np.arange(size, dtype=np.float32)[:, None] - np.float32(centre[0])
    x = np.arange(size, dtype=np.float32)[None, :] - np.float32(centre[1])
    radius = np.hypot(x, y)
    outer = rng.uniform(0.26, 0.4) * size
    shape = rng.choice(["disc", "rounded rectangle", "ring"])
    # Signed distance to the part's outline in pixels, negative inside.
    if shape == "disc":
        distance = radius - outer
    elif shape == "ring":
        inner = outer * rng.uniform(0.35, 0.6)
        distance = np.abs(radius - (outer + inner) / 2) - (outer - inner) / 2
    else:
        half_w, half_h = outer, outer * rng.uniform(0.55, 1.0)
        if rng.random() < 0.5:
            half_w, half_h = half_h, half_w
        corner = min(half_w, half_h) * rng.uniform(0.15, 0.5)
        qx = np.abs(x) - np.float32(half_w - corner)
        qy = np.abs(y) - np.float32(half_h - corner)
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        distance = outside + np.minimum(np.maximum(qx, qy), 0) - np.float32(corner)
    coverage = np.clip(0.5 - distance, 0, 1)

    light = rng.uniform(0, 2 * math.pi)
    gradient = (x * math.cos(light) + y * math.sin(light)) / np.float32(outer)
    bevel = np.exp(np.minimum(distance, 0) / np.float32(max(1.5, 0.03 * size)))
    grain = _smooth_field(rng, (size, size), (int(rng.integers(16, 48)),) * 2) - 0.5
    shade = 1 + 0.12 * gradient - 0.3 * bevel + rng.uniform(0.03, 0.1) * grain
    part = _shaded(body, shade)
    vignette = 1 - 0.1 * (radius / np.float32(size)) ** 2
    plain = _shaded(background, vignette)
    image = plain + coverage[..., None] * (part - plain)
    image += rng.normal(0, 1.5, size=image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _woven(rng: np.random.Generator, size: int) -> np.ndarray:
    """Basket weave: alternating blocks of horizontal and vertical threads."""
    period = max(4.0, rng.uniform(0.02, 0.06) * size)
    threads = int(rng.integers(2, 5))
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    across = 0.5 + 0.5 * np.cos(2 * math.pi * threads * x / period)
    down = 0.5 + 0.5 * np.cos(2 * math.pi * threads * y / period)
    block = ((y // period + x // period) % 2).astype(bool)
    values = np.where(block, across, down) * 0.7 + 0.3 * _streaks(rng, (size, size), period, 0)
    colour = rng.uniform(40, 220, size=3)
    palette = _palette(np.stack([colour * 0.45, colour, np.minimum(colour * 1.2, 255)]))
    return _colourize(_normalize(values), palette)


def _brushed(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed metal: long fine streaks over a soft sheen."""
    streaks = _streaks(rng, (size, size), rng.uniform(0.3, 0.8) * size, rng.choice([0.0, 90.0]) + rng.normal(0, 3))
    sheen = _smooth_field(rng, (size, size), (2, 2))
    values = 0.6 * streaks + 0.4 * sheen
    grey = rng.uniform(110, 200)
    colours = np.array([[grey * 0.75] * 3, [grey * 1.1] * 3]) * rng.uniform(0.93, 1.0, size=3)
    return _colourize(values, _palette(np.clip(colours, 0, 255)))


def _grain(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wood-like grain: growth rings distorted by low-frequency noise, plus fine fibres."""
    angle = rng.uniform(0, math.pi)
    along = _along((size, size), angle)
    warp = _smooth_field(rng, (size, size), (int(rng.integers(1, 4)), int(rng.integers(2, 6)))) * rng.uniform(0.8, 2.5)
    rings = np.sin(2 * math.pi * (along / np.float32(rng.uniform(0.04, 0.12) * size) + warp)) * 0.5 + 0.5
    fibres = _streaks(rng, (size, size), 0.2 * size, math.degrees(angle) + 90)
    values = 0.75 * rings**1.5 + 0.25 * fibres
    light = rng.uniform(130, 230) * np.array([1.0, rng.uniform(0.65, 0.85), rng.uniform(0.35, 0.6)])
    return _colourize(_normalize(values), _palette(np.stack([light * 0.55, light])))


_SURFACES = (_woven, _brushed, _grain)


def procedural_normal(rng: np.random.Generator, size: int, kind: NormalKind) -> np.ndarray:
    """A defect-free size x size RGB image drawn from scratch, so a recipe needs no photos.

    "object" is a centred part (disc, rounded rectangle or ring) with shading and
    fine grain on a plain dark or light background; "texture" is a homogeneous
    woven, brushed-metal or wood-grain surface.
    """
    if kind == "object":
        return _object_image(rng, size)
    if kind == "texture":
        surface = _SURFACES[rng.integers(len(_SURFACES))](rng, size)
        noise = rng.normal(0, 2.0, size=surface.shape)
        return np.clip(surface + noise + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown normal image kind {kind!r}; choose 'object' or 'texture'")

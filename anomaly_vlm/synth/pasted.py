"""Defects made of other pixels: foreign texture in a Perlin blob, moved patches, another image's patch.

The self-supervised simulators of the literature: DRAEM's texture blend, CutPaste and
its scar variant (a piece of the image itself, pasted elsewhere on the part), and NSA's
Poisson-blended patch from another normal image. Their defect kinds are those the
result resembles: a discoloration, misplaced material, a scar, foreign material.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .drawing import colour_jitter, foreground_point, paste, shorter_side, transplant, uniform
from .perlin import perlin_mask
from .simulators import SimulationContext, register_simulator


@dataclass
class PerlinConfig:
    """DRAEM: a Perlin-noise blob filled with a foreign texture."""

    min_exponent: int = field(default=0, metadata={"help": "noise has at least 2**min_exponent cells per axis"})
    max_exponent: int = field(default=5, metadata={"help": "noise has at most 2**max_exponent cells per axis"})
    threshold: float = field(default=0.5, metadata={"help": "noise above this is the defect"})
    max_beta: float = field(default=0.8, metadata={"help": "the image keeps weight U[0, max_beta) under the texture"})
    rotate: bool = field(default=True, metadata={"help": "turn the noise field by a random angle"})


@register_simulator("perlin", PerlinConfig)
def _perlin(image: np.ndarray, context: SimulationContext, config: PerlinConfig):
    rng = context.rng
    shape = image.shape[:2]
    region = perlin_mask(shape, rng, config.min_exponent, config.max_exponent, config.threshold, config.rotate)
    region &= context.foreground
    if not region.any():
        return image, region, "discoloration"
    texture = context.textures.sample(rng, shape)
    beta = np.float32(rng.uniform(0, config.max_beta))
    out = image.copy()
    inside = image[region].astype(np.float32)
    out[region] = np.clip((1 - beta) * texture[region] + beta * inside + 0.5, 0, 255).astype(np.uint8)
    return out, region, "discoloration"


@dataclass
class CutPasteConfig:
    """CutPaste: a rectangle cut anywhere in the image, pasted with its centre on the part."""

    area: tuple[float, float] = field(default=(0.02, 0.15), metadata={"help": "patch area, fraction of the image"})
    aspect: tuple[float, float] = field(
        default=(0.3, 3.3), metadata={"help": "width/height range; below and above 1 equally likely"}
    )
    jitter: float = field(
        default=0.1, metadata={"help": "colour jitter: brightness, contrast, gains within 1 +- jitter"}
    )


def _aspect(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """Width / height, with CutPaste's even odds of a tall or a wide patch."""
    low, high = bounds
    if low < 1 < high:
        return float(rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high))
    return float(rng.uniform(low, high))


def _inside_point(rng: np.random.Generator, shape: tuple[int, ...], half: tuple[float, float]) -> tuple[int, int]:
    """A uniform whole-pixel (y, x) that keeps a box of half-extents `half` within the image."""
    point = []
    for size, extent in zip(shape[:2], half):
        low = math.ceil(extent)
        point.append(int(rng.integers(low, max(low, math.floor(size - extent)) + 1)))
    return point[0], point[1]


@register_simulator("cutpaste", CutPasteConfig)
def _cutpaste(image: np.ndarray, context: SimulationContext, config: CutPasteConfig):
    rng = context.rng
    height, width = image.shape[:2]
    area = uniform(rng, config.area) * height * width
    aspect = _aspect(rng, config.aspect)
    patch_w = min(math.sqrt(area * aspect), 0.9 * width)
    patch_h = min(area / patch_w, 0.9 * height)
    source = _inside_point(rng, image.shape, (patch_h / 2, patch_w / 2))
    window, pixels, footprint = transplant(image, source, foreground_point(context), (patch_h, patch_w), 0)
    out, region = paste(image, window, colour_jitter(rng, pixels, config.jitter), footprint)
    return out, region, "misplaced material"


@dataclass
class ScarConfig:
    """CutPaste-scar: a thin strip of the image, turned, pasted on the part."""

    width: tuple[float, float] = field(
        default=(0.008, 0.0625), metadata={"help": "strip width, fraction of the side (2-16 px at 256 px)"}
    )
    length: tuple[float, float] = field(
        default=(0.04, 0.1), metadata={"help": "strip length, fraction of the side (10-25 px at 256 px)"}
    )
    max_angle: float = field(default=45.0, metadata={"help": "the strip turns by U(-max_angle, max_angle) degrees"})
    jitter: float = field(
        default=0.1, metadata={"help": "colour jitter: brightness, contrast, gains within 1 +- jitter"}
    )


@register_simulator("scar", ScarConfig)
def _scar(image: np.ndarray, context: SimulationContext, config: ScarConfig):
    rng = context.rng
    side = shorter_side(image)
    size = (max(2.0, uniform(rng, config.length) * side), max(1.0, uniform(rng, config.width) * side))
    source = _inside_point(rng, image.shape, (size[0] / 2, size[1] / 2))
    angle = rng.uniform(-config.max_angle, config.max_angle)
    window, pixels, footprint = transplant(image, source, foreground_point(context), size, angle)
    out, region = paste(image, window, colour_jitter(rng, pixels, config.jitter), footprint)
    return out, region, "scar"


@dataclass
class NsaConfig:
    """NSA: a patch of another normal image, Poisson-blended into this one."""

    size: tuple[float, float] = field(
        default=(0.05, 0.3), metadata={"help": "patch side per axis, fraction of the image side"}
    )
    min_shift: float = field(
        default=0.1, metadata={"help": "least distance between source and target, fraction of the side"}
    )


@register_simulator("nsa", NsaConfig)
def _nsa(image: np.ndarray, context: SimulationContext, config: NsaConfig):
    """Without `other_normal` the patch comes from the image itself, at least `min_shift` away.

    Source and target centres are both drawn on this image's foreground: images of
    one category are roughly aligned, so the patch comes from the part, not the backdrop.
    """
    rng = context.rng
    height, width = image.shape[:2]
    source_image = context.other_normal() if context.other_normal is not None else image
    if source_image.shape != image.shape or source_image.dtype != np.uint8:
        shown = f"{source_image.dtype} {source_image.shape}"
        raise ValueError(f"nsa: other_normal gave a {shown} image, expected uint8 {image.shape}")
    patch_h = max(3, min(height - 4, round(uniform(rng, config.size) * height)))
    patch_w = max(3, min(width - 4, round(uniform(rng, config.size) * width)))
    half = (patch_h / 2 + 2, patch_w / 2 + 2)

    def placed(point: tuple[int, int]) -> tuple[int, int]:
        return tuple(int(min(max(p, math.ceil(h)), n - math.ceil(h))) for p, h, n in zip(point, half, (height, width)))

    source, target = placed(foreground_point(context)), placed(foreground_point(context))
    if source_image is image and math.dist(source, target) < config.min_shift * shorter_side(image):
        return image, np.zeros((height, width), dtype=bool), "foreign material"
    top, left = source[0] - patch_h // 2, source[1] - patch_w // 2
    # One pixel of margin: seamlessClone zeroes the mask's outermost ring.
    patch = np.ascontiguousarray(source_image[top - 1 : top + patch_h + 1, left - 1 : left + patch_w + 1])
    clone_mask = np.zeros(patch.shape[:2], dtype=np.uint8)
    clone_mask[1:-1, 1:-1] = 255
    out = cv2.seamlessClone(patch, np.ascontiguousarray(image), clone_mask, (target[1], target[0]), cv2.NORMAL_CLONE)
    region = np.zeros((height, width), dtype=bool)
    dest_top, dest_left = target[0] - patch_h // 2, target[1] - patch_w // 2
    region[dest_top : dest_top + patch_h, dest_left : dest_left + patch_w] = True
    return out, region, "foreign material"

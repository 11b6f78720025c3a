"""Marks on an intact surface: a scratch, a stain, contamination (specks or a fibre).

Each is drawn as an alpha map over a window and blended onto the surface, which
stays whole underneath: compare `damage` for defects that break the part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .drawing import blend, blob_on_part, draw_lines, foreground_point, random_path, shorter_side, uniform, window_around
from .simulators import SimulationContext, register_simulator


@dataclass
class ScratchConfig:
    """A thin, gently curved line, brighter or darker than the surface."""

    length: tuple[float, float] = field(default=(0.1, 0.4), metadata={"help": "length, fraction of the side"})
    width: tuple[float, float] = field(
        default=(0.004, 0.012), metadata={"help": "width, fraction of the side (1-3 px at 256 px)"}
    )
    bend: float = field(default=0.8, metadata={"help": "overall bend U(-bend, bend) in radians"})
    strength: tuple[float, float] = field(
        default=(0.45, 0.9), metadata={"help": "how far the line moves to white or black"}
    )
    blur: float = field(default=0.002, metadata={"help": "Gaussian blur sigma, fraction of the side"})


@register_simulator("scratch", ScratchConfig)
def _scratch(image: np.ndarray, context: SimulationContext, config: ScratchConfig):
    rng = context.rng
    side = shorter_side(image)
    length = uniform(rng, config.length) * side
    path = random_path(rng, foreground_point(context), length, 24, 0.03, rng.uniform(-config.bend, config.bend), 0.0)
    thickness = max(1, round(uniform(rng, config.width) * side))
    window, alpha = draw_lines(image.shape, [(path, thickness)], config.blur * side)
    colour = np.float32(255 if rng.random() < 0.5 else 0)
    out, region = blend(image, window, alpha * np.float32(uniform(rng, config.strength)), colour)
    return out, region, "scratch"


@dataclass
class StainConfig:
    """An irregular, soft-edged blob of colour over the surface."""

    radius: tuple[float, float] = field(default=(0.03, 0.12), metadata={"help": "blob radius, fraction of the side"})
    opacity: tuple[float, float] = field(default=(0.35, 0.8), metadata={"help": "opacity at the blob's centre"})
    softness: tuple[float, float] = field(default=(0.1, 0.5), metadata={"help": "edge fade, fraction of the radius"})
    irregularity: float = field(default=0.35, metadata={"help": "outline wobble, fraction of the radius"})


@register_simulator("stain", StainConfig)
def _stain(image: np.ndarray, context: SimulationContext, config: StainConfig):
    rng = context.rng
    window, rho = blob_on_part(rng, image, context, config.radius, config.irregularity)
    softness = uniform(rng, config.softness)
    alpha = np.clip((1 - rho) / np.float32(softness), 0, 1)
    alpha = alpha * alpha * (3 - 2 * alpha) * np.float32(uniform(rng, config.opacity))
    base = image[window].astype(np.float32)
    if rng.random() < 0.7:
        # Dyes and dirt absorb light: tint the surface multiplicatively.
        layer = base * rng.uniform(0.15, 0.8, size=3).astype(np.float32)
    else:
        layer = rng.uniform(0, 255, size=3).astype(np.float32)
    out, region = blend(image, window, alpha, layer)
    return out, region, "stain"


@dataclass
class ContaminationConfig:
    """A cluster of small specks, or a loose fibre, lying on the surface."""

    specks: tuple[int, int] = field(default=(4, 30), metadata={"help": "number of specks, inclusive range"})
    spread: tuple[float, float] = field(default=(0.02, 0.08), metadata={"help": "cluster radius, fraction of the side"})
    speck_size: tuple[float, float] = field(
        default=(0.004, 0.015), metadata={"help": "speck radius, fraction of the side"}
    )
    fibre_probability: float = field(default=0.3, metadata={"help": "chance of a fibre instead of specks"})
    fibre_length: tuple[float, float] = field(
        default=(0.08, 0.25), metadata={"help": "fibre length, fraction of the side"}
    )


@register_simulator("contamination", ContaminationConfig)
def _contamination(image: np.ndarray, context: SimulationContext, config: ContaminationConfig):
    rng = context.rng
    side = shorter_side(image)
    centre = foreground_point(context)
    colour = rng.uniform(0, 70, size=3).astype(np.float32)
    if rng.random() < config.fibre_probability:
        path = random_path(rng, centre, uniform(rng, config.fibre_length) * side, 32, 0.25, rng.uniform(-3, 3), 0.0)
        window, alpha = draw_lines(image.shape, [(path, max(1, round(0.004 * side)))], 0.0)
        alpha *= np.float32(rng.uniform(0.6, 0.95))
    else:
        count = int(rng.integers(config.specks[0], config.specks[1] + 1))
        spread = uniform(rng, config.spread) * side
        radii = np.maximum(0.7, rng.uniform(*config.speck_size, size=count) * side)
        reach = 3 * spread + radii.max() + 2
        window = window_around(image.shape, centre, (reach, reach))
        canvas = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=np.uint8)
        offsets = rng.normal(0, spread, size=(count, 2)).clip(-3 * spread, 3 * spread)
        shades = rng.uniform(150, 255, size=count)
        for (oy, ox), r, shade in zip(offsets, radii, shades):
            point = (round((centre[1] + ox - window[1].start) * 16), round((centre[0] + oy - window[0].start) * 16))
            cv2.circle(canvas, point, round(r * 16), float(shade), -1, cv2.LINE_AA, 4)
        alpha = canvas.astype(np.float32) * np.float32(1 / 255)
    out, region = blend(image, window, alpha, colour)
    return out, region, "contamination"

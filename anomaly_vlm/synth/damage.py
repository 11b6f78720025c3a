"""Structural damage: a crack, a hole and a missing chunk, where the part itself is broken.

Unlike `marks`, these change the part's shape: a crack cuts dark into it, a hole is a
shaded pit with a rim, a missing chunk shows the backdrop through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .drawing import (
    blend,
    blob_on_part,
    draw_lines,
    ellipse_radius,
    foreground_point,
    pixel_offsets,
    random_path,
    shorter_side,
    uniform,
    window_around,
)
from .foreground import border_colour
from .simulators import SimulationContext, register_simulator


@dataclass
class CrackConfig:
    """A jagged dark line with a few thinner branches."""

    length: tuple[float, float] = field(
        default=(0.15, 0.45), metadata={"help": "main line length, fraction of the side"}
    )
    width: tuple[float, float] = field(
        default=(0.004, 0.012), metadata={"help": "main line width, fraction of the side"}
    )
    branches: tuple[int, int] = field(default=(1, 4), metadata={"help": "number of branches, inclusive range"})
    darkness: tuple[float, float] = field(
        default=(0.6, 0.95), metadata={"help": "fraction of brightness the crack takes away"}
    )


@register_simulator("crack", CrackConfig)
def _crack(image: np.ndarray, context: SimulationContext, config: CrackConfig):
    rng = context.rng
    side = shorter_side(image)
    length = uniform(rng, config.length) * side
    steps = max(6, int(length / max(2.0, 0.025 * side)))
    trunk = random_path(rng, foreground_point(context), length, steps, 0.08, 0.0, 0.45)
    thickness = max(1, round(uniform(rng, config.width) * side))
    lines = [(trunk, thickness)]
    for _ in range(int(rng.integers(config.branches[0], config.branches[1] + 1))):
        start = trunk[int(rng.integers(1, len(trunk) - 1))]
        twig_length = length * rng.uniform(0.15, 0.45)
        twig = random_path(rng, (0.0, 0.0), twig_length, max(3, steps // 3), 0.08, 0.0, 0.45)
        lines.append((twig - twig[0] + start, max(1, thickness - 1)))
    window, alpha = draw_lines(image.shape, lines, 0.5)
    out, region = blend(image, window, alpha * np.float32(uniform(rng, config.darkness)), np.float32(0))
    return out, region, "crack"


@dataclass
class HoleConfig:
    """A dark elliptic pit with a lit inner wall and a raised, shaded rim."""

    radius: tuple[float, float] = field(
        default=(0.02, 0.07), metadata={"help": "major semi-axis, fraction of the side"}
    )
    aspect: tuple[float, float] = field(default=(0.6, 1.0), metadata={"help": "minor / major axis"})
    rim: tuple[float, float] = field(default=(0.15, 0.4), metadata={"help": "rim width, fraction of the radius"})
    depth: tuple[float, float] = field(
        default=(0.75, 0.95), metadata={"help": "fraction of brightness lost at the bottom"}
    )


@register_simulator("hole", HoleConfig)
def _hole(image: np.ndarray, context: SimulationContext, config: HoleConfig):
    rng = context.rng
    radius = max(2.0, uniform(rng, config.radius) * shorter_side(image))
    axes = (radius, radius * uniform(rng, config.aspect))
    rim = uniform(rng, config.rim)
    centre = foreground_point(context)
    window = window_around(image.shape, centre, (radius * (1 + rim) + 2,) * 2)
    dy, dx = pixel_offsets(window, centre)
    rho = ellipse_radius(dy, dx, axes, rng.uniform(0, math.pi))
    light = rng.uniform(0, 2 * math.pi)
    facing = (dx * np.float32(math.cos(light)) + dy * np.float32(math.sin(light))) / np.maximum(np.hypot(dx, dy), 1)
    # The wall opposite the light catches it near the top; the rim is lit on the light's side.
    bottom = (1 - uniform(rng, config.depth)) * (1 + 2.5 * rho**4 * np.maximum(-facing, 0))
    lip = np.clip(1 - (rho - 1) / rim, 0, 1)
    rim_shade = 1 + 0.35 * facing * lip
    pit = np.clip((1 - rho) * np.float32(radius) + 0.5, 0, 1)
    shade = rim_shade + pit * (bottom - rim_shade)
    out = image.copy()
    out[window] = np.clip(image[window] * shade[..., None] + 0.5, 0, 255).astype(np.uint8)
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = rho < 1 + rim
    return out, region, "hole"


@dataclass
class MissingConfig:
    """A chunk of the part gone: the backdrop shows through (a dark void on textures)."""

    radius: tuple[float, float] = field(default=(0.05, 0.15), metadata={"help": "chunk radius, fraction of the side"})
    irregularity: float = field(default=0.3, metadata={"help": "outline wobble, fraction of the radius"})


@register_simulator("missing", MissingConfig)
def _missing(image: np.ndarray, context: SimulationContext, config: MissingConfig):
    """On an all-foreground image there is no backdrop to show, so the void is a flat dark colour."""
    rng = context.rng
    window, rho = blob_on_part(rng, image, context, config.radius, config.irregularity)
    chunk = rho < 1
    if context.foreground.all():
        fill = np.full(3, rng.uniform(5, 40), dtype=np.float32)
    else:
        fill = border_colour(image)
    noise = rng.normal(0, 2.0, size=chunk.shape + (3,)).astype(np.float32)
    out = image.copy()
    out[window][chunk] = np.clip(fill + noise[chunk] + 0.5, 0, 255).astype(np.uint8)
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = chunk
    return out, region, "missing material"

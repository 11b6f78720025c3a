"""The defect simulators' registry, and the check that turns what one drew into an exact training pair.

A simulator draws one kind of defect (`pasted`, `marks` and `damage` hold them; the
package registers them all on import). `simulate` turns what it drew into a training
pair whose mask is exactly the set of pixels that changed visibly, so no label claims
an invisible defect and no visible change goes unlabelled. Sizes are fractions of the
shorter image side, so a config works at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np

from ..configs import ConfigError, from_dict
from .textures import TextureSource

TOLERANCE = 8
"""A pixel counts as changed when some channel moved by more than this many grey levels."""
MIN_AREA_FRACTION = 0.0002
"""Changed specks smaller than this fraction of the image (and than MIN_AREA_PIXELS) are reverted."""
MIN_AREA_PIXELS = 4


@dataclass
class Defect:
    image: np.ndarray
    """HxWx3 uint8: the defective image."""
    mask: np.ndarray
    """HxW bool: exactly the pixels that differ from the normal image by more than TOLERANCE."""
    defect_type: str
    """One of `anomaly_vlm.vocabulary.DEFECT_TYPES`."""


@dataclass
class SimulationContext:
    rng: np.random.Generator
    foreground: np.ndarray
    """HxW bool: where defects may land."""
    textures: TextureSource
    other_normal: Callable[[], np.ndarray] | None = None
    """Another normal image of the same size (for NSA); None if unavailable."""


SimulatorFunction = Callable[[np.ndarray, SimulationContext, Any], tuple[np.ndarray, np.ndarray, str]]


class Simulator(NamedTuple):
    config_class: type
    function: SimulatorFunction


SIMULATORS: dict[str, Simulator] = {}


def register_simulator(name: str, config_class: type):
    """Register f(image, context, config) -> (new image, region, defect type) under `name`."""

    def register(function: SimulatorFunction) -> SimulatorFunction:
        SIMULATORS[name] = Simulator(config_class, function)
        return function

    return register


def _lookup(name: str) -> Simulator:
    if name not in SIMULATORS:
        raise ValueError(f"unknown defect simulator {name!r}; registered: {', '.join(sorted(SIMULATORS))}")
    return SIMULATORS[name]


def simulator_config(name: str, values: dict) -> Any:
    """The config of simulator `name` from a plain mapping (e.g. a recipe file), checked field by field."""
    config = from_dict(_lookup(name).config_class, values, f"simulator {name!r}")
    for item in fields(config):
        value = getattr(config, item.name)
        if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
            raise ConfigError(f"simulator {name!r}: option {item.name!r} is a (low, high) range, got {list(value)}")
    return config


def visible_change(
    original: np.ndarray, new: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """region & visibly changed, without specks too small to see, and the region's bounding box.

    All the work happens on the box: defects are small next to the image.
    """
    mask = np.zeros(region.shape, dtype=bool)
    left, top, width, height = cv2.boundingRect(region.view(np.uint8))
    box = (slice(top, top + height), slice(left, left + width))
    if width == 0:
        return mask, box
    difference = cv2.absdiff(original[box], new[box])
    moved = np.maximum(np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2]) > TOLERANCE
    changed = region[box] & moved
    _, labels, stats, _ = cv2.connectedComponentsWithStats(changed.view(np.uint8), connectivity=8)
    min_area = max(MIN_AREA_PIXELS, math.ceil(MIN_AREA_FRACTION * region.size))
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    mask[box] = keep[labels]
    return mask, box


def simulate(
    name: str, image: np.ndarray, context: SimulationContext, config: Any = None, attempts: int = 10
) -> Defect:
    """Draw defect `name` on a copy of `image`; the mask is exactly the pixels that changed.

    The simulator's region is clipped to the foreground; outside the mask the result
    equals `image` bit for bit, inside every pixel differs by more than TOLERANCE.
    A draw that changes nothing visible is retried with the same generator.
    """
    simulator = _lookup(name)
    config = simulator.config_class() if config is None else config
    if not isinstance(config, simulator.config_class):
        raise ValueError(f"simulator {name!r} takes a {simulator.config_class.__name__}, got {type(config).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"simulator {name!r} needs an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    foreground = context.foreground
    if foreground.dtype != bool or foreground.shape != image.shape[:2] or not foreground.any():
        raise ValueError(f"simulator {name!r}: the foreground must be a non-empty {image.shape[:2]} bool mask")
    original = image.view()
    original.flags.writeable = False
    for _ in range(attempts):
        new, region, defect_type = simulator.function(original, context, config)
        mask, box = visible_change(original, new, region & foreground)
        if mask.any():
            result = original.copy()
            inside = mask[box]
            result[box][inside] = new[box][inside]
            return Defect(result, mask, defect_type)
    raise ValueError(f"simulator {name!r} changed no pixel visibly in {attempts} attempts")

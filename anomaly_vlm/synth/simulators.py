"""Defect simulators with exact pixel masks, registered by name.

Each simulator draws one kind of defect: DRAEM's Perlin-shaped texture blend,
CutPaste and its scar variant, NSA's Poisson-blended patch from another normal
image, and procedural scratches, cracks, holes, stains, contamination and missing
material. `simulate` turns what a simulator drew into a training pair whose mask is
exactly the set of pixels that changed visibly, so no label claims an invisible
defect and no visible change goes unlabelled. Sizes are fractions of the shorter
image side, so a config works at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np

from ..configs import ConfigError, from_dict
from .foreground import border_colour
from .perlin import perlin_mask, perlin_noise
from .textures import TextureSource

DEFECT_TYPES: tuple[str, ...] = (
    "scratch",
    "crack",
    "hole",
    "stain",
    "contamination",
    "missing material",
    "discoloration",
    "misplaced material",
    "scar",
    "foreign material",
)

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
    """One of DEFECT_TYPES."""


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


# Shared geometry -------------------------------------------------------------


def _side(image: np.ndarray) -> int:
    return min(image.shape[:2])


def _foreground_point(context: SimulationContext) -> tuple[int, int]:
    """A (y, x) pixel drawn uniformly from the foreground."""
    candidates = np.flatnonzero(context.foreground)
    index = int(candidates[context.rng.integers(len(candidates))])
    return divmod(index, context.foreground.shape[1])


def _window(shape: tuple[int, ...], centre: tuple[float, float], radius: tuple[float, float]) -> tuple[slice, slice]:
    """Rows and columns within `radius` = (ry, rx) of `centre` = (y, x), clipped to the image."""
    top, bottom = max(0, math.floor(centre[0] - radius[0])), min(shape[0], math.ceil(centre[0] + radius[0]) + 1)
    left, right = max(0, math.floor(centre[1] - radius[1])), min(shape[1], math.ceil(centre[1] + radius[1]) + 1)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def _offsets(window: tuple[slice, slice], centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from `centre` over `window`, as broadcastable (h, 1) and (1, w) float32."""
    dy = np.arange(window[0].start, window[0].stop, dtype=np.float32)[:, None] - np.float32(centre[0])
    dx = np.arange(window[1].start, window[1].stop, dtype=np.float32)[None, :] - np.float32(centre[1])
    return dy, dx


def _ellipse_radius(dy: np.ndarray, dx: np.ndarray, axes: tuple[float, float], angle: float) -> np.ndarray:
    """Normalized elliptic radius: 1 on the outline of an ellipse with semi-axes `axes`, turned by `angle`."""
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * cos + dy * sin) / np.float32(axes[0])
    v = (-dx * sin + dy * cos) / np.float32(axes[1])
    return np.sqrt(u * u + v * v)


def _path(
    rng: np.random.Generator,
    centre: tuple[float, float],
    length: float,
    steps: int,
    wander: float,
    bend: float,
    jag: float,
) -> np.ndarray:
    """(steps + 1, 2) x, y points of a random path centred on `centre` = (y, x).

    The heading drifts (`wander` per step), bends by `bend` radians overall, and
    zig-zags by `jag` per step without drift.
    """
    turns = rng.normal(0.0, wander, size=steps) + bend / steps
    headings = rng.uniform(0, 2 * math.pi) + np.cumsum(turns) + rng.normal(0.0, jag, size=steps)
    moves = np.stack([np.cos(headings), np.sin(headings)], axis=1) * (length / steps)
    points = np.concatenate([np.zeros((1, 2)), np.cumsum(moves, axis=0)])
    return points - points.mean(axis=0) + np.array([centre[1], centre[0]])


def _draw_lines(
    shape: tuple[int, ...], lines: list[tuple[np.ndarray, int]], blur: float
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Anti-aliased polylines (points, thickness) as an alpha map over their bounding window."""
    points = np.concatenate([p for p, _ in lines])
    pad = max(t for _, t in lines) + 3 * blur + 2
    low, high = points.min(axis=0) - pad, points.max(axis=0) + pad
    centre = ((low[1] + high[1]) / 2, (low[0] + high[0]) / 2)
    window = _window(shape, centre, ((high[1] - low[1]) / 2, (high[0] - low[0]) / 2))
    canvas = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=np.uint8)
    origin = np.array([window[1].start, window[0].start])
    for line, thickness in lines:
        fixed = np.round((line - origin) * 16).astype(np.int32)
        cv2.polylines(canvas, [fixed], False, 255, thickness=int(thickness), lineType=cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) * np.float32(1 / 255)
    if blur > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    return window, alpha


def _blend(
    image: np.ndarray, window: tuple[slice, slice], alpha: np.ndarray, layer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Image with `layer` laid over `window` at opacity `alpha`, and the region alpha touches."""
    out = image.copy()
    base = out[window].astype(np.float32)
    out[window] = np.clip(base + alpha[..., None] * (layer - base) + 0.5, 0, 255).astype(np.uint8)
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = alpha > 0.01
    return out, region


def _jitter(rng: np.random.Generator, patch: np.ndarray, strength: float) -> np.ndarray:
    """Brightness, contrast and per-channel gain each within 1 +- strength, as CutPaste's colour jitter."""
    if strength <= 0:
        return patch
    values = patch.astype(np.float32)
    mean = values.mean()
    contrast, brightness = rng.uniform(1 - strength, 1 + strength, size=2)
    gains = rng.uniform(1 - strength / 2, 1 + strength / 2, size=3).astype(np.float32)
    values = ((values - mean) * contrast + mean) * brightness * gains
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def _transplant(
    image: np.ndarray,
    source_centre: tuple[float, float],
    target_centre: tuple[float, float],
    size: tuple[float, float],
    angle: float,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """A (h, w) rectangle of `image` around `source_centre`, turned by `angle` degrees, moved to `target_centre`.

    Returns the target window, the warped pixels over it and the rectangle's footprint.
    At angle 0 with whole-pixel centres the copy is exact.
    """
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    half_h, half_w = size[0] / 2, size[1] / 2
    extent = (abs(sin) * half_w + abs(cos) * half_h, abs(cos) * half_w + abs(sin) * half_h)
    window = _window(image.shape, target_centre, extent)
    top, left = window[0].start, window[1].start
    ty, tx = target_centre
    sy, sx = source_centre
    # Inverse map from window pixels to source pixels: rotate the offset from the target centre back.
    matrix = np.array(
        [
            [cos, sin, cos * (left - tx) + sin * (top - ty) + sx],
            [-sin, cos, -sin * (left - tx) + cos * (top - ty) + sy],
        ]
    )
    height, width = window[0].stop - top, window[1].stop - left
    pixels = cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    dy, dx = _offsets(window, target_centre)
    along = np.abs(dx * np.float32(cos) + dy * np.float32(sin))
    across = np.abs(-dx * np.float32(sin) + dy * np.float32(cos))
    footprint = (along < half_w) & (across < half_h)
    return window, pixels, footprint


def _paste(image: np.ndarray, window: tuple[slice, slice], pixels: np.ndarray, footprint: np.ndarray):
    out = image.copy()
    out[window][footprint] = pixels[footprint]
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = footprint
    return out, region


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# DRAEM, CutPaste, NSA ---------------------------------------------------------


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
    area = _uniform(rng, config.area) * height * width
    aspect = _aspect(rng, config.aspect)
    patch_w = min(math.sqrt(area * aspect), 0.9 * width)
    patch_h = min(area / patch_w, 0.9 * height)
    source = _inside_point(rng, image.shape, (patch_h / 2, patch_w / 2))
    window, pixels, footprint = _transplant(image, source, _foreground_point(context), (patch_h, patch_w), 0)
    out, region = _paste(image, window, _jitter(rng, pixels, config.jitter), footprint)
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
    side = _side(image)
    size = (max(2.0, _uniform(rng, config.length) * side), max(1.0, _uniform(rng, config.width) * side))
    source = _inside_point(rng, image.shape, (size[0] / 2, size[1] / 2))
    angle = rng.uniform(-config.max_angle, config.max_angle)
    window, pixels, footprint = _transplant(image, source, _foreground_point(context), size, angle)
    out, region = _paste(image, window, _jitter(rng, pixels, config.jitter), footprint)
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
    patch_h = max(3, min(height - 4, round(_uniform(rng, config.size) * height)))
    patch_w = max(3, min(width - 4, round(_uniform(rng, config.size) * width)))
    half = (patch_h / 2 + 2, patch_w / 2 + 2)

    def placed(point: tuple[int, int]) -> tuple[int, int]:
        return tuple(int(min(max(p, math.ceil(h)), n - math.ceil(h))) for p, h, n in zip(point, half, (height, width)))

    source, target = placed(_foreground_point(context)), placed(_foreground_point(context))
    if source_image is image and math.dist(source, target) < config.min_shift * _side(image):
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


# Procedural shapes ------------------------------------------------------------


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
    side = _side(image)
    length = _uniform(rng, config.length) * side
    path = _path(rng, _foreground_point(context), length, 24, 0.03, rng.uniform(-config.bend, config.bend), 0.0)
    thickness = max(1, round(_uniform(rng, config.width) * side))
    window, alpha = _draw_lines(image.shape, [(path, thickness)], config.blur * side)
    colour = np.float32(255 if rng.random() < 0.5 else 0)
    out, region = _blend(image, window, alpha * np.float32(_uniform(rng, config.strength)), colour)
    return out, region, "scratch"


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
    side = _side(image)
    length = _uniform(rng, config.length) * side
    steps = max(6, int(length / max(2.0, 0.025 * side)))
    trunk = _path(rng, _foreground_point(context), length, steps, 0.08, 0.0, 0.45)
    thickness = max(1, round(_uniform(rng, config.width) * side))
    lines = [(trunk, thickness)]
    for _ in range(int(rng.integers(config.branches[0], config.branches[1] + 1))):
        start = trunk[int(rng.integers(1, len(trunk) - 1))]
        twig_length = length * rng.uniform(0.15, 0.45)
        twig = _path(rng, (0.0, 0.0), twig_length, max(3, steps // 3), 0.08, 0.0, 0.45)
        lines.append((twig - twig[0] + start, max(1, thickness - 1)))
    window, alpha = _draw_lines(image.shape, lines, 0.5)
    out, region = _blend(image, window, alpha * np.float32(_uniform(rng, config.darkness)), np.float32(0))
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
    radius = max(2.0, _uniform(rng, config.radius) * _side(image))
    axes = (radius, radius * _uniform(rng, config.aspect))
    rim = _uniform(rng, config.rim)
    centre = _foreground_point(context)
    window = _window(image.shape, centre, (radius * (1 + rim) + 2,) * 2)
    dy, dx = _offsets(window, centre)
    rho = _ellipse_radius(dy, dx, axes, rng.uniform(0, math.pi))
    light = rng.uniform(0, 2 * math.pi)
    facing = (dx * np.float32(math.cos(light)) + dy * np.float32(math.sin(light))) / np.maximum(np.hypot(dx, dy), 1)
    # The wall opposite the light catches it near the top; the rim is lit on the light's side.
    bottom = (1 - _uniform(rng, config.depth)) * (1 + 2.5 * rho**4 * np.maximum(-facing, 0))
    lip = np.clip(1 - (rho - 1) / rim, 0, 1)
    rim_shade = 1 + 0.35 * facing * lip
    pit = np.clip((1 - rho) * np.float32(radius) + 0.5, 0, 1)
    shade = rim_shade + pit * (bottom - rim_shade)
    out = image.copy()
    out[window] = np.clip(image[window] * shade[..., None] + 0.5, 0, 255).astype(np.uint8)
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = rho < 1 + rim
    return out, region, "hole"


def _blob(
    rng: np.random.Generator, window: tuple[slice, slice], centre: tuple[int, int], radius: float, irregularity: float
) -> np.ndarray:
    """Elliptic radius with a Perlin-wobbled outline: < 1 inside an irregular blob."""
    dy, dx = _offsets(window, centre)
    rho = _ellipse_radius(dy, dx, (radius, radius * rng.uniform(0.5, 1.0)), rng.uniform(0, math.pi))
    cells = tuple(int(c) for c in rng.integers(2, 6, size=2))
    return rho + np.float32(irregularity) * perlin_noise(rho.shape, cells, rng)


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
    radius = max(3.0, _uniform(rng, config.radius) * _side(image))
    centre = _foreground_point(context)
    window = _window(image.shape, centre, (radius * (1 + config.irregularity) + 2,) * 2)
    rho = _blob(rng, window, centre, radius, config.irregularity)
    softness = _uniform(rng, config.softness)
    alpha = np.clip((1 - rho) / np.float32(softness), 0, 1)
    alpha = alpha * alpha * (3 - 2 * alpha) * np.float32(_uniform(rng, config.opacity))
    base = image[window].astype(np.float32)
    if rng.random() < 0.7:
        # Dyes and dirt absorb light: tint the surface multiplicatively.
        layer = base * rng.uniform(0.15, 0.8, size=3).astype(np.float32)
    else:
        layer = rng.uniform(0, 255, size=3).astype(np.float32)
    out, region = _blend(image, window, alpha, layer)
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
    side = _side(image)
    centre = _foreground_point(context)
    colour = rng.uniform(0, 70, size=3).astype(np.float32)
    if rng.random() < config.fibre_probability:
        path = _path(rng, centre, _uniform(rng, config.fibre_length) * side, 32, 0.25, rng.uniform(-3, 3), 0.0)
        window, alpha = _draw_lines(image.shape, [(path, max(1, round(0.004 * side)))], 0.0)
        alpha *= np.float32(rng.uniform(0.6, 0.95))
    else:
        count = int(rng.integers(config.specks[0], config.specks[1] + 1))
        spread = _uniform(rng, config.spread) * side
        radii = np.maximum(0.7, rng.uniform(*config.speck_size, size=count) * side)
        reach = 3 * spread + radii.max() + 2
        window = _window(image.shape, centre, (reach, reach))
        canvas = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=np.uint8)
        offsets = rng.normal(0, spread, size=(count, 2)).clip(-3 * spread, 3 * spread)
        shades = rng.uniform(150, 255, size=count)
        for (oy, ox), r, shade in zip(offsets, radii, shades):
            point = (round((centre[1] + ox - window[1].start) * 16), round((centre[0] + oy - window[0].start) * 16))
            cv2.circle(canvas, point, round(r * 16), float(shade), -1, cv2.LINE_AA, 4)
        alpha = canvas.astype(np.float32) * np.float32(1 / 255)
    out, region = _blend(image, window, alpha, colour)
    return out, region, "contamination"


@dataclass
class MissingConfig:
    """A chunk of the part gone: the backdrop shows through (a dark void on textures)."""

    radius: tuple[float, float] = field(default=(0.05, 0.15), metadata={"help": "chunk radius, fraction of the side"})
    irregularity: float = field(default=0.3, metadata={"help": "outline wobble, fraction of the radius"})


@register_simulator("missing", MissingConfig)
def _missing(image: np.ndarray, context: SimulationContext, config: MissingConfig):
    """On an all-foreground image there is no backdrop to show, so the void is a flat dark colour."""
    rng = context.rng
    radius = max(3.0, _uniform(rng, config.radius) * _side(image))
    centre = _foreground_point(context)
    window = _window(image.shape, centre, (radius * (1 + config.irregularity) + 2,) * 2)
    chunk = _blob(rng, window, centre, radius, config.irregularity) < 1
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

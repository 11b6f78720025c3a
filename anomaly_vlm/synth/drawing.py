"""Drawing helpers the defect simulators share: windows, shapes, strokes, blends and pastes.

Defects are small next to the image, so every helper works on a window around the
defect and hands back what it drew over that window, not a full-size layer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .perlin import perlin_noise

if TYPE_CHECKING:
    from .simulators import SimulationContext


def shorter_side(image: np.ndarray) -> int:
    return min(image.shape[:2])


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def foreground_point(context: SimulationContext) -> tuple[int, int]:
    """A (y, x) pixel drawn uniformly from the foreground."""
    candidates = np.flatnonzero(context.foreground)
    index = int(candidates[context.rng.integers(len(candidates))])
    return divmod(index, context.foreground.shape[1])


def window_around(
    shape: tuple[int, ...], centre: tuple[float, float], radius: tuple[float, float]
) -> tuple[slice, slice]:
    """Rows and columns within `radius` = (ry, rx) of `centre` = (y, x), clipped to the image."""
    top, bottom = max(0, math.floor(centre[0] - radius[0])), min(shape[0], math.ceil(centre[0] + radius[0]) + 1)
    left, right = max(0, math.floor(centre[1] - radius[1])), min(shape[1], math.ceil(centre[1] + radius[1]) + 1)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def pixel_offsets(window: tuple[slice, slice], centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from `centre` over `window`, as broadcastable (h, 1) and (1, w) float32."""
    dy = np.arange(window[0].start, window[0].stop, dtype=np.float32)[:, None] - np.float32(centre[0])
    dx = np.arange(window[1].start, window[1].stop, dtype=np.float32)[None, :] - np.float32(centre[1])
    return dy, dx


def ellipse_radius(dy: np.ndarray, dx: np.ndarray, axes: tuple[float, float], angle: float) -> np.ndarray:
    """Normalized elliptic radius: 1 on the outline of an ellipse with semi-axes `axes`, turned by `angle`."""
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * cos + dy * sin) / np.float32(axes[0])
    v = (-dx * sin + dy * cos) / np.float32(axes[1])
    return np.sqrt(u * u + v * v)


def blob_radius(
    rng: np.random.Generator, window: tuple[slice, slice], centre: tuple[int, int], radius: float, irregularity: float
) -> np.ndarray:
    """Elliptic radius with a Perlin-wobbled outline: < 1 inside an irregular blob."""
    dy, dx = pixel_offsets(window, centre)
    rho = ellipse_radius(dy, dx, (radius, radius * rng.uniform(0.5, 1.0)), rng.uniform(0, math.pi))
    cells = tuple(int(c) for c in rng.integers(2, 6, size=2))
    return rho + np.float32(irregularity) * perlin_noise(rho.shape, cells, rng)


def blob_on_part(rng: np.random.Generator, image: np.ndarray, context: SimulationContext,
                 radius: tuple[float, float], irregularity: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """An irregular blob of a random radius (fraction of the side) on the part: its window and `blob_radius` there."""
    size = max(3.0, uniform(rng, radius) * shorter_side(image))
    centre = foreground_point(context)
    window = window_around(image.shape, centre, (size * (1 + irregularity) + 2,) * 2)
    return window, blob_radius(rng, window, centre, size, irregularity)


def random_path(
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


def draw_lines(
    shape: tuple[int, ...], lines: list[tuple[np.ndarray, int]], blur: float
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Anti-aliased polylines (points, thickness) as an alpha map over their bounding window."""
    points = np.concatenate([p for p, _ in lines])
    pad = max(t for _, t in lines) + 3 * blur + 2
    low, high = points.min(axis=0) - pad, points.max(axis=0) + pad
    centre = ((low[1] + high[1]) / 2, (low[0] + high[0]) / 2)
    window = window_around(shape, centre, ((high[1] - low[1]) / 2, (high[0] - low[0]) / 2))
    canvas = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=np.uint8)
    origin = np.array([window[1].start, window[0].start])
    for line, thickness in lines:
        fixed = np.round((line - origin) * 16).astype(np.int32)
        cv2.polylines(canvas, [fixed], False, 255, thickness=int(thickness), lineType=cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) * np.float32(1 / 255)
    if blur > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    return window, alpha


def blend(
    image: np.ndarray, window: tuple[slice, slice], alpha: np.ndarray, layer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Image with `layer` laid over `window` at opacity `alpha`, and the region alpha touches."""
    out = image.copy()
    base = out[window].astype(np.float32)
    out[window] = np.clip(base + alpha[..., None] * (layer - base) + 0.5, 0, 255).astype(np.uint8)
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = alpha > 0.01
    return out, region


def colour_jitter(rng: np.random.Generator, patch: np.ndarray, strength: float) -> np.ndarray:
    """Brightness, contrast and per-channel gain each within 1 +- strength, as CutPaste's colour jitter."""
    if strength <= 0:
        return patch
    values = patch.astype(np.float32)
    mean = values.mean()
    contrast, brightness = rng.uniform(1 - strength, 1 + strength, size=2)
    gains = rng.uniform(1 - strength / 2, 1 + strength / 2, size=3).astype(np.float32)
    values = ((values - mean) * contrast + mean) * brightness * gains
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def transplant(
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
    window = window_around(image.shape, target_centre, extent)
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
    dy, dx = pixel_offsets(window, target_centre)
    along = np.abs(dx * np.float32(cos) + dy * np.float32(sin))
    across = np.abs(-dx * np.float32(sin) + dy * np.float32(cos))
    footprint = (along < half_w) & (across < half_h)
    return window, pixels, footprint


def paste(image: np.ndarray, window: tuple[slice, slice], pixels: np.ndarray, footprint: np.ndarray):
    out = image.copy()
    out[window][footprint] = pixels[footprint]
    region = np.zeros(image.shape[:2], dtype=bool)
    region[window] = footprint
    return out, region

"""2-D Perlin noise and the DRAEM anomaly mask drawn from it.

Perlin noise gives blobs with smooth, irregular outlines at a chosen number of cells
per axis, which is why DRAEM uses thresholded noise as the shape of a defect.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic: zero first and second derivatives at cell corners, so no grid seams."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], scale: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise of `shape` with `scale` = (cells down, cells across), float32 in [-1, 1].

    The field is computed on a grid whose sides are multiples of the cell counts and
    cropped, so any image shape works.
    """
    height, width = int(shape[0]), int(shape[1])
    cells_y, cells_x = max(1, int(scale[0])), max(1, int(scale[1]))
    cell_h, cell_w = -(-height // cells_y), -(-width // cells_x)
    # Every cell holds the same pixel offsets, so the field is built as
    # (cells_y, cell_h, width) by broadcasting. Interpolating along x first only
    # touches (cells_y, 1, width) arrays, so few full-size passes remain.
    fy = ((np.arange(cell_h, dtype=np.float32) + 0.5) / cell_h)[None, :, None]
    fx = ((np.arange(cell_w, dtype=np.float32) + 0.5) / cell_w)[None, None, None, :]
    angles = rng.uniform(0.0, 2 * math.pi, size=(cells_y + 1, cells_x + 1))
    grad_y = (np.sin(angles) * math.sqrt(2)).astype(np.float32)[:, None, :, None]
    grad_x = (np.cos(angles) * math.sqrt(2)).astype(np.float32)[:, None, :, None]
    wx = _fade(fx)

    def row(dy: int) -> tuple[np.ndarray, np.ndarray]:
        """Corner dot products of one cell edge, lerped along x: value = slope * (fy - dy) + offset."""
        left_y, right_y = grad_y[dy : dy + cells_y, :, :-1], grad_y[dy : dy + cells_y, :, 1:]
        left_x, right_x = grad_x[dy : dy + cells_y, :, :-1], grad_x[dy : dy + cells_y, :, 1:]
        slope = left_y + wx * (right_y - left_y)
        offset = left_x * fx + wx * (right_x * (fx - 1) - left_x * fx)
        return slope.reshape(cells_y, 1, -1), offset.reshape(cells_y, 1, -1)

    (top_slope, top_offset), (bottom_slope, bottom_offset) = row(0), row(1)
    top = top_slope * fy + top_offset
    bottom = bottom_slope * (fy - 1) + bottom_offset
    noise = top + _fade(fy) * (bottom - top)
    noise = noise.reshape(cells_y * cell_h, -1)[:height, :width]
    return np.clip(noise, -1.0, 1.0)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    min_exponent: int = 0,
    max_exponent: int = 5,
    threshold: float = 0.5,
    rotate: bool = True,
) -> np.ndarray:
    """DRAEM's defect shape: noise with 2**U{min..max} cells per axis (drawn independently), > threshold.

    With `rotate` the field is turned by a random angle so blobs are not aligned
    with the image axes; the border is reflected so no corner is left empty.
    """
    exponents = rng.integers(min_exponent, max_exponent + 1, size=2)
    noise = perlin_noise(shape, (2 ** int(exponents[0]), 2 ** int(exponents[1])), rng)
    if rotate:
        height, width = noise.shape
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), float(rng.uniform(-90, 90)), 1.0)
        noise = cv2.warpAffine(noise, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return noise > threshold

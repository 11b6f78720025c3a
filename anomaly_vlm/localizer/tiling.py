"""Working sizes that keep a set's aspect ratio, and square tiles over them for backbones that take squares.

A KolektorSDD part is 2.5 times taller than wide and its cracks are a few pixels
across: squashed to a square they all but vanish. Every mode therefore works at one
size per set whose shorter side is the configured image size and whose aspect is
the set's median, rounded to the feature stride. Backbones with a fixed square input
(CLIP) see it as overlapping square tiles whose outputs are averaged where they
overlap, so each tile is scored at the resolution the backbone was trained at.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

MAX_ASPECT = 4.0
"""Longer side at most this many shorter sides; beyond it, images are squashed to that aspect."""
MIN_OVERLAP = 0.25
"""Neighbouring tiles share at least this fraction of a tile, so no defect sits only on a tile's edge."""


def working_size(images: list[Image.Image], short_side: int, stride: int, keep_aspect: bool = True) -> tuple[int, int]:
    """(height, width) for a set: shorter side `short_side`, the set's median aspect, the longer side a multiple of `stride`."""
    if not keep_aspect or not images:
        return short_side, short_side
    tall = float(np.median([image.height / image.width for image in images]))
    stretch = min(max(tall, 1 / tall), MAX_ASPECT)
    longer = max(short_side, stride * round(short_side * stretch / stride))
    return (longer, short_side) if tall >= 1 else (short_side, longer)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Starts of the fewest tiles of side `tile` that cover `length` with `MIN_OVERLAP`, on the stride grid."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile * (1 - MIN_OVERLAP))) + 1
    return [stride * round(i * (length - tile) / (count - 1) / stride) for i in range(count)]


def tiles(size: tuple[int, int], tile: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of the square tiles covering an image of `size` = (height, width)."""
    return [(top, left) for top in tile_starts(size[0], tile, stride) for left in tile_starts(size[1], tile, stride)]


def stitch(parts: list[torch.Tensor], corners: list[tuple[int, int]], size: tuple[int, int], scale: int = 1) -> torch.Tensor:
    """Per-tile outputs (B, C, t, t) placed at `corners` / `scale` on a (B, C, *size / scale) canvas, averaged where they overlap."""
    first = parts[0]
    height, width = size[0] // scale, size[1] // scale
    total = first.new_zeros(first.shape[0], first.shape[1], height, width)
    count = first.new_zeros(1, 1, height, width)
    for part, (top, left) in zip(parts, corners):
        rows, cols = slice(top // scale, top // scale + part.shape[2]), slice(left // scale, left // scale + part.shape[3])
        total[:, :, rows, cols] += part
        count[:, :, rows, cols] += 1
    return total / count

"""Content digests: what decides a score is named by its content, not by its path or size.

Two reference sets of the same size, or two prompt checkpoints in one folder, must
not share records; a renamed image must still find its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_BLOCK = 1 << 20


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes; read once per process while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def image_digest(image: Image.Image) -> str:
    """sha256 of an image's size and RGB pixels (for images that arrive without a file)."""
    digest = hashlib.sha256(f"{image.size}".encode())
    digest.update(np.asarray(image.convert("RGB")).tobytes())
    return digest.hexdigest()


def images_digest(images: list[Image.Image]) -> str:
    """One digest for an ordered set of images (a reference set)."""
    return hashlib.sha256("".join(image_digest(image) for image in images).encode()).hexdigest()


def tensors_digest(tensors: dict[str, Any]) -> str:
    """sha256 of named tensors (a model's learned parameters), in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().float().cpu().contiguous().numpy()
        digest.update(name.encode())
        digest.update(f"{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def json_digest(data: Any) -> str:
    """sha256 of JSON data with sorted keys (tuples and lists alike, paths as strings)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

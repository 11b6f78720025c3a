"""What mutual and reference scoring share: features for a set, distance maps to 0..1 maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .features import FeatureSource
from .scorer import robust_z, smooth, z_to_unit


@dataclass
class DistanceMapConfig:
    """Settings common to the training-free, distance-based modes."""

    neighbourhoods: tuple[int, ...] = field(default=(3, 5, 7), metadata={"help": "patch neighbourhood sizes averaged over"})
    batch_size: int = field(default=8, metadata={"help": "images per feature-extraction pass"})
    sigma: float = field(default=4.0, metadata={"help": "Gaussian smoothing of the final map, in pixels"})
    midpoint: float = field(default=6.0, metadata={"help": "distance, in robust std above normal, scored 0.5"})
    width: float = field(default=1.0, metadata={"help": "softness of the 0..1 scale around the midpoint"})


def extract_all(source: FeatureSource, images: list[Image.Image], size: tuple[int, int], batch_size: int, desc: str,
                progress: bool) -> torch.Tensor:
    """Patch features of every image at the working `size` (height, width): (B, C, h, w), on the CPU in float32."""
    parts = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        batch = torch.stack([source.preprocess(image, size) for image in images[start : start + batch_size]])
        parts.append(source.extract(batch).float().cpu())
    return torch.cat(parts)


class Standardizer:
    """Per-channel mean and std of a feature set; identity for sources that need none."""

    def __init__(self, features: torch.Tensor, enabled: bool):
        self.enabled = enabled
        if enabled:
            self.mean = features.mean(dim=(0, 2, 3), keepdim=True)
            self.std = features.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std if self.enabled else features


def finish_maps(z_maps: torch.Tensor, size: tuple[int, int], config: DistanceMapConfig) -> tuple[np.ndarray, np.ndarray]:
    """Patch-grid z maps (B, h, w) -> smoothed 0..1 maps (B, *size) and the map maxima in z units."""
    up = F.interpolate(z_maps.unsqueeze(1).float(), size=tuple(size), mode="bilinear", align_corners=False)
    z = smooth(up[:, 0].numpy(), config.sigma)
    return z_to_unit(z, config.midpoint, config.width).astype(np.float32), z.reshape(len(z), -1).max(axis=1)


def normalize_scale(scores: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Distances of one neighbourhood size in robust z units, so sizes can be averaged."""
    return torch.from_numpy(robust_z(scores.numpy(), normal.numpy()))

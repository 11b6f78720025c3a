"""Patch feature sources for mutual and reference scoring, registered by name.

`clip` reads tapped layers of the CLIP image tower; `builtin` is a fixed filter bank
that needs no download at all (the offline default, see DESIGN.md). Both give a
(B, C, h, w) grid of patch features for a batch of preprocessed images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..clip import ClipBackbone, default_taps, encode_image_dense


class FeatureSource(Protocol):
    name: str
    image_size: int
    standardize: bool
    """Whether channels differ in scale, so a set must be standardized before distances."""

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def extract(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict: ...


FEATURE_SOURCES: dict[str, Callable[..., FeatureSource]] = {}


def register_feature_source(name: str):
    def register(builder: Callable[..., FeatureSource]):
        FEATURE_SOURCES[name] = builder
        return builder

    return register


def build_feature_source(name: str, **options) -> FeatureSource:
    if name not in FEATURE_SOURCES:
        raise ValueError(f"unknown feature source {name!r}; registered: {', '.join(sorted(FEATURE_SOURCES))}")
    return FEATURE_SOURCES[name](**options)


@dataclass
class BuiltinFeatureConfig:
    """The download-free filter bank: colour, gradient and curvature statistics per patch."""

    image_size: int = field(default=256, metadata={"help": "working resolution in pixels"})
    grid_size: int = field(default=32, metadata={"help": "patch grid side; patches are image_size / grid_size wide"})
    sigmas: tuple[float, ...] = field(default=(1.0, 2.0, 4.0), metadata={"help": "filter scales in pixels at 256 px"})


def _gaussian_derivatives(sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D Gaussian and its first and second derivatives, scale-normalized."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g, -x / sigma * g, (x**2 / sigma**2 - 1) * g


def _separable(images: torch.Tensor, along_x: torch.Tensor, along_y: torch.Tensor) -> torch.Tensor:
    channels, radius = images.shape[1], len(along_x) // 2
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, along_x.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, along_y.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class BuiltinFeatures:
    """Hand-crafted multi-scale features: no weights, deterministic, fast on a CPU.

    Per scale: blurred opponent colour (intensity, red-green, yellow-blue), gradient
    magnitude and four oriented gradient energies, and three second-derivative
    (curvature) energies of the intensity. Each response is pooled to the patch grid
    as its mean and its standard deviation, which together describe colour, edges and
    texture. On MVTec bottle these beat fixed-seed random convolutions in both mutual
    and reference scoring (see benchmarks/training_free.py).
    """

    name = "builtin"
    standardize = True

    def __init__(self, config: BuiltinFeatureConfig = BuiltinFeatureConfig()):
        self.config = config
        self.image_size = config.image_size
        self._kernels = [(s, _gaussian_derivatives(s * config.image_size / 256)) for s in config.sigmas]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        resized = image.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def responses(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel filter responses: 11 channels per scale, (B, 11 * len(sigmas), S, S)."""
        red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
        intensity = (red + green + blue) / 3
        colour = torch.cat([intensity, (red - green) / 2, (red + green - 2 * blue) / 4], dim=1)
        maps = []
        for _, (g, d1, d2) in self._kernels:
            maps.append(_separable(colour, g, g))
            gx, gy = _separable(intensity, d1, g), _separable(intensity, g, d1)
            gxx, gyy, gxy = _separable(intensity, d2, g), _separable(intensity, g, d2), _separable(intensity, d1, d1)
            maps += [
                torch.sqrt(gx**2 + gy**2 + 1e-12),
                gx.abs(),
                gy.abs(),
                (gx + gy).abs() / math.sqrt(2),
                (gx - gy).abs() / math.sqrt(2),
                (gxx + gyy).abs(),
                (gxx - gyy).abs(),
                2 * gxy.abs(),
            ]
        return torch.cat(maps, dim=1)

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        responses = self.responses(images.float())
        grid = self.config.grid_size
        mean = F.adaptive_avg_pool2d(responses, grid)
        spread = (F.adaptive_avg_pool2d(responses**2, grid) - mean**2).clamp_min(0).sqrt()
        return torch.cat([mean, spread], dim=1)

    def describe(self) -> dict:
        return {"features": self.name, "feature_image_size": self.image_size, "feature_grid": self.config.grid_size}


@register_feature_source("builtin")
def _builtin(image_size: int | None = None, grid_size: int | None = None, **_) -> BuiltinFeatures:
    config = BuiltinFeatureConfig()
    return BuiltinFeatures(BuiltinFeatureConfig(image_size or config.image_size, grid_size or config.grid_size))


class ClipFeatures:
    """Tapped layers of a frozen CLIP image tower (ordinary attention, no surgery).

    Each layer's tokens are layer-normalized and unit-length; layers are concatenated
    with weight 1/sqrt(L), so a squared distance is the mean over layers.
    """

    name = "clip"
    standardize = False

    def __init__(self, backbone: ClipBackbone, layers: tuple[int, ...] | None = None):
        self.backbone = backbone
        self.layers = tuple(layers) if layers else default_taps(backbone.vision_depth)
        self.image_size = backbone.image_size

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.backbone.preprocess(image)

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.backbone.device, self.backbone.dtype)
        tokens = encode_image_dense(self.backbone.model.visual, images, self.layers, None, project=False).patch_tokens
        features = torch.cat(tokens, dim=-1).float().cpu() / math.sqrt(len(tokens))
        grid = self.backbone.grid_size
        return features.transpose(1, 2).reshape(len(images), -1, grid, grid)

    def describe(self) -> dict:
        return {"features": self.name, **self.backbone.describe(), "feature_layers": list(self.layers)}


@register_feature_source("clip")
def _clip(backbone: ClipBackbone | None = None, layers: tuple[int, ...] | None = None, **_) -> ClipFeatures:
    if backbone is None:
        raise ValueError("the clip feature source needs a loaded CLIP backbone")
    return ClipFeatures(backbone, layers)

"""Patch feature sources for mutual and reference scoring, registered by name.

`clip` reads tapped layers of the CLIP image tower; `builtin` is a fixed filter bank
that needs no download at all (the offline default, see DESIGN.md). Both give a
(B, C, h, w) grid of patch features for a batch of preprocessed images. A source
works at one (height, width) per set (`working_size`): the set's aspect ratio is kept
unless `keep_aspect` is off (tiling.py).
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
from .tiling import stitch, tiles, working_size


class FeatureSource(Protocol):
    name: str
    image_size: int
    stride: int
    """Pixels per patch of the working image."""
    standardize: bool
    """Whether channels differ in scale, so a set must be standardized before distances."""

    def working_size(self, images: list[Image.Image]) -> tuple[int, int]: ...

    def preprocess(self, image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor: ...

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

    image_size: int = field(default=256, metadata={"help": "shorter side of the working image in pixels"})
    grid_size: int = field(default=32, metadata={
        "help": "patches along the shorter side; patches are image_size / grid_size wide (finer finds thinner defects)"})
    keep_aspect: bool = field(default=True, metadata={"help": "keep the set's aspect ratio instead of squashing to a square"})
    sigmas: tuple[float, ...] = field(default=(1.0, 2.0, 4.0), metadata={"help": "filter scales in pixels at 256 px"})
    gain: bool = field(default=True, metadata={
        "help": "scale each image to one median brightness first, so a lighting change between sessions is not read "
                "as a defect (banks fitted before this option existed score without it)"})


MID_GREY = 0.5
SATURATED = 254 / 255


def normalize_gain(image: torch.Tensor) -> torch.Tensor:
    """`image` (3, H, W) in 0..1 times the gain that brings its median unsaturated intensity to mid-grey.

    The median ignores what a defect does to a small part of the image, and saturated
    pixels (a lit background, a glint) say nothing about the exposure. Values are not
    clipped: clipping after the gain made new edges at every highlight.
    """
    intensity = image.mean(dim=0)
    lit = intensity[intensity < SATURATED]
    return image * (MID_GREY / (lit if lit.numel() else intensity).median().clamp_min(1 / 255))


def _gaussian_derivatives(sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D Gaussian and its first and second derivatives, scale-normalized."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g, -x / sigma * g, (x**2 / sigma**2 - 1) * g


def _separable(images: torch.Tensor, along_x: torch.Tensor, along_y: torch.Tensor) -> torch.Tensor:
    """Direct separable correlation with reflect padding (the definition; `_FilterBank` computes the same by FFT)."""
    channels, radius = images.shape[1], len(along_x) // 2
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, along_x.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, along_y.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c at least n: a length FFTs handle fast."""
    best = 1 << (n - 1).bit_length()
    power3 = 1
    while power3 < best:
        power5 = power3
        while power5 < best:
            value = power5
            while value < n:
                value *= 2
            best = min(best, value)
            power5 *= 5
        power3 *= 3
    return best


# (channel of the opponent colour image, kernel along x, kernel along y) for each linear response of one scale:
# the three blurred colour channels, then gx, gy, gxx, gyy, gxy of the intensity.
_LINEAR = ((0, "g", "g"), (1, "g", "g"), (2, "g", "g"), (0, "d1", "g"), (0, "g", "d1"),
           (0, "d2", "g"), (0, "g", "d2"), (0, "d1", "d1"))


class _FilterBank:
    """All linear responses of all scales through one FFT of the padded colour image.

    Reflect padding by the largest radius holds every smaller radius' padding inside
    it, so one padded image serves every scale; its spectrum is taken once and each
    response is one product and one inverse FFT, whatever the kernel length. Equal to
    `_separable` up to float32 rounding (about 1e-6 of the image range).
    """

    def __init__(self, kernels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], size: tuple[int, int]):
        self.radius = max(len(g) // 2 for g, _, _ in kernels)
        if self.radius >= min(size):
            raise ValueError(f"filters {2 * self.radius + 1} px wide need images over {self.radius} px; got {size}")
        self.size = tuple(size)  # (height, width): tall or wide images keep their aspect
        self.lengths = tuple(_fft_size(n + 2 * self.radius) for n in self.size)
        self.spectra = []  # per scale: (8, Py, Px // 2 + 1) complex, one 2-D kernel spectrum per linear response
        for g, d1, d2 in kernels:
            named = {"g": g, "d1": d1, "d2": d2}
            along_x = {name: torch.fft.rfft(self._centred(k, self.lengths[1])) for name, k in named.items()}
            along_y = {name: torch.fft.fft(self._centred(k, self.lengths[0])) for name, k in named.items()}
            self.spectra.append(torch.stack([along_y[ky].unsqueeze(1) * along_x[kx].unsqueeze(0) for _, kx, ky in _LINEAR]))
        self.channels = torch.tensor([c for c, _, _ in _LINEAR])

    @staticmethod
    def _centred(kernel: torch.Tensor, length: int) -> torch.Tensor:
        """A correlation kernel as a length-P circular convolution kernel centred on index 0."""
        radius = len(kernel) // 2
        full = torch.zeros(length, dtype=torch.float64)
        full[torch.arange(-radius, radius + 1) % length] = kernel.flip(0).double()
        return full

    def spectrum(self, colour: torch.Tensor) -> torch.Tensor:
        padded = F.pad(colour, (self.radius,) * 4, mode="reflect")
        return torch.fft.rfft2(padded, s=self.lengths)

    def linear(self, spectrum: torch.Tensor, scale: int) -> torch.Tensor:
        """The 8 linear responses of one scale: (B, 8, H, W)."""
        products = spectrum[:, self.channels] * self.spectra[scale].to(spectrum.dtype)
        out = torch.fft.irfft2(products, s=self.lengths)
        r, (height, width) = self.radius, self.size
        return out[..., r : r + height, r : r + width]


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
        self.stride = max(1, config.image_size // config.grid_size)
        self._kernels = [(s, _gaussian_derivatives(s * config.image_size / 256)) for s in config.sigmas]
        self._filter_bank: _FilterBank | None = None

    @classmethod
    def described(cls, description: dict) -> BuiltinFeatures:
        """The features a `describe()` names: a bank fitted on them is scored on no others."""
        return cls(BuiltinFeatureConfig(int(description["feature_image_size"]), int(description["feature_grid"]),
                                        keep_aspect=bool(description.get("keep_aspect", True)),
                                        gain=bool(description.get("feature_gain", False))))

    def working_size(self, images: list[Image.Image]) -> tuple[int, int]:
        return working_size(images, self.image_size, self.stride, self.config.keep_aspect)

    def preprocess(self, image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
        height, width = size or (self.image_size, self.image_size)
        resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
        tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return normalize_gain(tensor) if self.config.gain else tensor

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """Patches along each side of a working image: `grid_size` along the shorter side, as many along the other."""
        return tuple(max(1, round(side * self.config.grid_size / self.image_size)) for side in size)

    def _bank(self, size: tuple[int, int]) -> _FilterBank:
        if self._filter_bank is None or self._filter_bank.size != tuple(size):
            self._filter_bank = _FilterBank([k for _, k in self._kernels], tuple(size))
        return self._filter_bank

    def scale_responses(self, images: torch.Tensor):
        """Per scale, the per-pixel filter responses (B, 11, H, W), in `responses` order."""
        red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
        intensity = (red + green + blue) / 3
        colour = torch.cat([intensity, (red - green) / 2, (red + green - 2 * blue) / 4], dim=1)
        bank = self._bank(tuple(images.shape[-2:]))
        spectrum = bank.spectrum(colour)
        for scale in range(len(self._kernels)):
            linear = bank.linear(spectrum, scale)
            blur, (gx, gy, gxx, gyy, gxy) = linear[:, :3], linear[:, 3:].unbind(1)
            yield torch.cat([
                blur,
                torch.stack([
                    torch.sqrt(gx**2 + gy**2 + 1e-12),
                    gx.abs(),
                    gy.abs(),
                    (gx + gy).abs() / math.sqrt(2),
                    (gx - gy).abs() / math.sqrt(2),
                    (gxx + gyy).abs(),
                    (gxx - gyy).abs(),
                    2 * gxy.abs(),
                ], dim=1),
            ], dim=1)

    def responses(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel filter responses: 11 channels per scale, (B, 11 * len(sigmas), S, S).

        Per scale: blurred intensity, red-green, yellow-blue; gradient magnitude, |gx|,
        |gy|, the two diagonal gradient energies; |gxx + gyy|, |gxx - gyy|, 2|gxy|.
        """
        return torch.cat(list(self.scale_responses(images)), dim=1)

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        # An image at a time: a batch's per-pixel responses run to hundreds of MB at 518 px, and mapping
        # and faulting in that much fresh memory costs more than the FFTs themselves.
        return torch.cat([self._extract(images[i : i + 1]) for i in range(len(images))])

    def _extract(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.grid(tuple(images.shape[-2:]))
        means, spreads = [], []
        # Pooled a scale at a time (bounded memory), in float64: the spread is sqrt(E[x^2] - E[x]^2), which in
        # float32 loses everything to cancellation where a response is nearly constant over a patch.
        for responses in self.scale_responses(images.float().contiguous()):
            responses = responses.double()
            mean = F.adaptive_avg_pool2d(responses, grid)
            means.append(mean)
            spreads.append((F.adaptive_avg_pool2d(responses.square(), grid) - mean.square()).clamp_min(0).sqrt())
        return torch.cat(means + spreads, dim=1).float()

    def describe(self) -> dict:
        """Named with the gain only where it is on, so a bank fitted before the option existed still reads as itself."""
        described = {"features": self.name, "feature_image_size": self.image_size, "feature_grid": self.config.grid_size,
                     "keep_aspect": self.config.keep_aspect}
        return {**described, "feature_gain": True} if self.config.gain else described


@register_feature_source("builtin")
def _builtin(image_size: int | None = None, grid_size: int | None = None, keep_aspect: bool = True, gain: bool = True,
             **_) -> BuiltinFeatures:
    config = BuiltinFeatureConfig()
    return BuiltinFeatures(BuiltinFeatureConfig(image_size or config.image_size, grid_size or config.grid_size,
                                                keep_aspect=keep_aspect, gain=gain))


class ClipFeatures:
    """Tapped layers of a frozen CLIP image tower (ordinary attention, no surgery).

    Each layer's tokens are layer-normalized and unit-length; layers are concatenated
    with weight 1/sqrt(L), so a squared distance is the mean over layers. A working
    image that is not square is read as overlapping square tiles at the backbone's
    size, stitched on the patch grid.
    """

    name = "clip"
    standardize = False

    def __init__(self, backbone: ClipBackbone, layers: tuple[int, ...] | None = None, keep_aspect: bool = True):
        self.backbone = backbone
        self.layers = tuple(layers) if layers else default_taps(backbone.vision_depth)
        self.image_size = backbone.image_size
        self.stride = backbone.patch_size
        self.keep_aspect = keep_aspect

    def working_size(self, images: list[Image.Image]) -> tuple[int, int]:
        return working_size(images, self.image_size, self.stride, self.keep_aspect)

    def preprocess(self, image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.backbone.preprocess(image, size)

    @torch.no_grad()
    def _extract_square(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.backbone.device, self.backbone.dtype)
        tokens = encode_image_dense(self.backbone.model.visual, images, self.layers, None, project=False).patch_tokens
        features = torch.cat(tokens, dim=-1).float().cpu() / math.sqrt(len(tokens))
        grid = self.backbone.grid_size
        return features.transpose(1, 2).reshape(len(images), -1, grid, grid)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        size, side = tuple(images.shape[-2:]), self.image_size
        if size == (side, side):
            return self._extract_square(images)
        corners = tiles(size, side, self.stride)
        parts = [self._extract_square(images[..., top : top + side, left : left + side]) for top, left in corners]
        return stitch(parts, corners, size, self.stride)

    def describe(self) -> dict:
        return {"features": self.name, **self.backbone.describe(), "feature_layers": list(self.layers),
                "keep_aspect": self.keep_aspect}


@register_feature_source("clip")
def _clip(backbone: ClipBackbone | None = None, layers: tuple[int, ...] | None = None, keep_aspect: bool = True,
          **_) -> ClipFeatures:
    if backbone is None:
        raise ValueError("the clip feature source needs a loaded CLIP backbone")
    return ClipFeatures(backbone, layers, keep_aspect)

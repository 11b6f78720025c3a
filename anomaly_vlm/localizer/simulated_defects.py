"""Training pairs made from good images alone: crops given simulated defects, with the defects' exact masks.

Every pair is a good image of the product at its working size, cropped and flipped,
and (with probability `anomaly_ratio`) given one or two defects drawn by the
package's own simulators. Defects land on the part only (`estimate_foreground`; a
texture's foreground is the whole image) and are drawn on a square window whose
side is the working image's shorter side, so a simulator's sizes (fractions of the
shorter side) mean the same thing as on the whole image.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import AnomalyVLMError
from ..synth.foreground import estimate_foreground
from ..synth.simulators import SimulationContext, simulate, simulator_config, visible_change
from ..synth.textures import ProceduralTextures
from .learned_config import LearnConfig

STRIDE = 8
"""The longer side of a learned working size is a multiple of this (the `stride` of `tiling.working_size`)."""


def to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 at `size` = (height, width), area-resampled."""
    image = image.convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BICUBIC, reducing_gap=None)
    return np.asarray(image, dtype=np.uint8)


def to_tensor(arrays: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).permute(0, 3, 1, 2).float() / 255.0


class DefectSampler:
    """Draws (crop, mask) pairs from good images: a crop, flips, and simulated defects."""

    def __init__(self, images: list[np.ndarray], config: LearnConfig):
        if not config.simulators:
            raise AnomalyVLMError("learn config: name at least one simulator")
        self.images = images
        self.config = config
        self.foregrounds = [estimate_foreground(image, config.content) for image in images]
        self.names = list(config.simulators)
        weights = np.array([config.simulators[n] for n in self.names], dtype=float)
        self.weights = weights / weights.sum()
        self.sim_configs = {n: simulator_config(n, config.simulator_options.get(n, {})) for n in self.names}
        self.textures = ProceduralTextures()
        self.side = config.image_size
        self.crop = min(config.crop or config.image_size, config.image_size)

    def _window(self, rng: np.random.Generator, index: int, flip: tuple[bool, bool]):
        image, foreground = self.images[index], self.foregrounds[index]
        height, width = image.shape[:2]
        ch, cw = min(self.side, height), min(self.side, width)
        top, left = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
        crop = image[top : top + ch, left : left + cw]
        fore = foreground[top : top + ch, left : left + cw]
        if flip[0]:
            crop, fore = crop[:, ::-1], fore[:, ::-1]
        if flip[1]:
            crop, fore = crop[::-1], fore[::-1]
        return np.ascontiguousarray(crop), np.ascontiguousarray(fore)

    def sample(self, rng: np.random.Generator, index: int | None = None, anomalous: bool | None = None):
        """One training pair: HxWx3 uint8 crop and HxW bool mask of what the simulators changed.

        Defects are drawn on an `image_size` square window (so their sizes are
        fractions of the working image's shorter side), then a `crop` square is cut
        from it, around a defect pixel when there is one.
        """
        image, mask = self._simulated(rng, index, anomalous)
        if self.crop >= min(image.shape[:2]):
            return image, mask
        height, width, crop = image.shape[0], image.shape[1], self.crop
        if mask.any():
            ys, xs = np.nonzero(mask)
            pick = int(rng.integers(len(ys)))
            jitter = rng.integers(-crop // 4, crop // 4 + 1, size=2)
            top, left = int(ys[pick] + jitter[0] - crop // 2), int(xs[pick] + jitter[1] - crop // 2)
        else:
            top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
        top, left = min(max(top, 0), height - crop), min(max(left, 0), width - crop)
        return image[top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]

    def _simulated(self, rng: np.random.Generator, index: int | None, anomalous: bool | None):
        config = self.config
        index = int(rng.integers(len(self.images))) if index is None else index
        flip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if config.flips else (False, False)
        normal, foreground = self._window(rng, index, flip)
        mask = np.zeros(normal.shape[:2], dtype=bool)
        anomalous = bool(rng.random() < config.anomaly_ratio) if anomalous is None else anomalous
        if not anomalous or not foreground.any():
            return normal, mask
        peers = [i for i in range(len(self.images)) if i != index] or [index]

        def other() -> np.ndarray:
            return self._window(rng, peers[int(rng.integers(len(peers)))], (False, False))[0]

        context = SimulationContext(rng, foreground, self.textures, other)
        image = normal
        low, high = config.defects_per_image
        for _ in range(int(rng.integers(low, high + 1))):
            name = self.names[int(rng.choice(len(self.names), p=self.weights))]
            try:
                defect = simulate(name, image, context, self.sim_configs[name])
            except ValueError:
                continue  # a draw that changed nothing visible: the crop keeps its other defects
            image, mask = defect.image, mask | defect.mask
        mask, _ = visible_change(normal, image, mask)
        image = np.where(mask[..., None], image, normal)
        return image, mask

    def batch(self, step: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of training step `step`: drawn from its own generator, so a resumed run draws the same."""
        rng = np.random.default_rng([seed, 1, step])
        pairs = [self.sample(rng) for _ in range(size)]
        images = to_tensor([p[0] for p in pairs])
        masks = torch.from_numpy(np.stack([p[1] for p in pairs])).float().unsqueeze(1)
        return images, masks

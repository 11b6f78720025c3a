"""Self scoring (one image, nothing else): each patch against the rest of its own image.

With no weights, no references and too few images to compare, the only evidence of
normal is the image itself: a part repeats its own structure (a texture, a rim, the
two sides of a symmetric part) while a defect is local and rare. So a patch is scored
by its distance to the closest patch of the same image, and of its flipped and
rotated copies, outside its own window carried onto each copy: otherwise a defect a
few patches wide, or its copy near an axis or the centre, would match itself. Channels
are standardized on the image alone, as no other image sets their scale. This is the
weakest mode: a defect that repeats, or a part with no repeated structure, defeats it,
and its z scale differs from product to product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import AnomalyVLMError
from .distance_maps import DistanceMapConfig, Standardizer, finish_maps, normalize_scale
from .features import FeatureSource
from .neighbours import as_patches, neighbourhood_average
from .reference import AUGMENTATIONS, check_augmentations, shape_preserving
from .scorer import Prediction, z_to_unit


@dataclass
class SelfConfig(DistanceMapConfig):
    """Defaults measured by benchmarks/self_mode.py; z scales differ by product, so the midpoint transfers poorly."""

    midpoint: float = field(default=4.8, metadata={"help": "z scored 0.5 (exceeded by 5% of MVTec bottle train/good images)"})
    radius: int = field(default=2, metadata={"help": "patches excluded on each side beyond the neighbourhood's half-width (2..4 tie on MVTec bottle)"})
    augmentations: tuple[str, ...] = field(default=("hflip", "vflip", "rot90"), metadata={"help": f"copies searched too: {', '.join(AUGMENTATIONS)} (rot90 helps on MVTec bottle)"})
    chunk: int = field(default=1024, metadata={"help": "query patches per distance block (bounds memory)"})


class SelfScorer:
    mode = "self"

    def __init__(self, source: FeatureSource, config: SelfConfig = SelfConfig(), progress: bool = True):
        check_augmentations(config.augmentations)
        if config.radius < 0:
            raise ValueError(f"the exclusion radius must be 0 or more patches; got {config.radius}")
        self.source = source
        self.config = config
        self.progress = progress
        self._near: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def variant_features(self, images: list[Image.Image], size: tuple[int, int]) -> Iterator[torch.Tensor]:
        """Per image, in order: features (1 + augmentations, C, h, w) of it and its copies, standardized on them alone.

        Extracted `batch_size` images at a time and handed out as they come, so only one pass is held.
        """
        per_pass = max(1, self.config.batch_size)
        augmentations = shape_preserving(self.config.augmentations, size)
        for start in range(0, len(images), per_pass):
            tensors = torch.stack([self.source.preprocess(image, size) for image in images[start : start + per_pass]])
            variants = torch.stack([tensors] + [AUGMENTATIONS[name](tensors) for name in augmentations], dim=1)
            features = self.source.extract(variants.flatten(0, 1)).float().cpu()
            for one in features.view(len(tensors), variants.shape[1], *features.shape[1:]):
                yield Standardizer(one, self.source.standardize)(one)

    def reach(self, size: int) -> int:
        """Patches excluded on each side at one neighbourhood size: the radius plus the averaging's own half-width."""
        return self.config.radius + size // 2

    def excluded(self, h: int, w: int, reach: int, start: int, stop: int) -> torch.Tensor:
        """(stop - start, candidates): True where a candidate comes from within `reach` patches of query patch start..stop.

        Candidates are the image's patches, then each copy's, each placed where it came
        from. Kept per grid as row and column tables (h or w by candidates), so a block's
        mask is two lookups.
        """
        key = (h, w, reach)
        if key not in self._near:
            index = torch.arange(h * w).view(h, w)
            copies = shape_preserving(self.config.augmentations, (h, w))
            sources = torch.cat([index.flatten()] + [AUGMENTATIONS[name](index).flatten() for name in copies])
            near_rows = (torch.arange(h).unsqueeze(1) - sources // w).abs().le(reach)
            near_cols = (torch.arange(w).unsqueeze(1) - sources % w).abs().le(reach)
            self._near[key] = near_rows, near_cols
        near_rows, near_cols = self._near[key]
        queries = torch.arange(start, stop)
        return near_rows[queries // w] & near_cols[queries % w]

    def patch_scores(self, variants: torch.Tensor) -> torch.Tensor:
        """One image's self scores (h, w): per neighbourhood size in robust z units, averaged."""
        h, w = variants.shape[2:]
        total = torch.zeros(h * w)
        for size in self.config.neighbourhoods:
            reach = self.reach(size)
            averaged = as_patches(neighbourhood_average(variants, size))
            query, bank = averaged[0], averaged.reshape(-1, averaged.shape[-1])
            bank_norms = (bank * bank).sum(dim=1)
            scores = torch.empty(h * w)
            for start in range(0, h * w, self.config.chunk):
                q = query[start : start + self.config.chunk]
                d = torch.addmm(bank_norms.unsqueeze(0), q, bank.T, alpha=-2)
                d.masked_fill_(self.excluded(h, w, reach, start, start + len(q)), float("inf"))
                scores[start : start + len(q)] = (d.amin(dim=1) + (q * q).sum(dim=1)).clamp_min(0).sqrt()
            if not torch.isfinite(scores).all():
                raise AnomalyVLMError(
                    f"self scoring: an exclusion of {reach} patches leaves some patches of the {h}x{w} grid nothing "
                    "to compare with; lower the radius or the neighbourhood sizes"
                )
            total += normalize_scale(scores, scores)
        return (total / len(self.config.neighbourhoods)).view(h, w)

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        if not images:
            raise AnomalyVLMError("self scoring needs at least one image")
        size = self.source.working_size(images)
        steps = tqdm(self.variant_features(images, size), total=len(images), desc="self scoring", unit="img",
                     disable=not self.progress, leave=False)
        maps = [self.patch_scores(variants) for variants in steps]
        anomaly_map, map_max = finish_maps(torch.stack(maps), size, self.config)
        image_score = z_to_unit(map_max, self.config.midpoint, self.config.width)
        return Prediction(anomaly_map, image_score, {"self_map_max_z": map_max}, (self.mode,))

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            **self.source.describe(),
            "radius": self.config.radius,
            "augmentations": list(self.config.augmentations),
            "neighbourhoods": list(self.config.neighbourhoods),
        }

"""Reference scoring (few-shot): nearest-neighbour distance to a memory bank of normal patches.

The bank holds every patch of k known-good images and of their flips and rotations
(parts are photographed in varying poses), subsampled by greedy coreset when large.
Distances are put on a common scale by leave-one-out: each reference scored against
the bank of the others shows how far normal patches typically are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from ..errors import AnomalyVLMError
from .distance_maps import DistanceMapConfig, Standardizer, extract_all, finish_maps, normalize_scale
from .features import FeatureSource
from .neighbours import as_patches, greedy_coreset, nearest_distance, neighbourhood_average
from .scorer import Prediction, z_to_unit

AUGMENTATIONS = {
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot90": lambda x: x.rot90(1, dims=(-2, -1)),
    "rot180": lambda x: x.rot90(2, dims=(-2, -1)),
    "rot270": lambda x: x.rot90(3, dims=(-2, -1)),
}


@dataclass
class ReferenceConfig(DistanceMapConfig):
    midpoint: float = field(default=4.3, metadata={"help": "z scored 0.5 (F1-best on MVTec bottle, 4 shots)"})
    augmentations: tuple[str, ...] = field(default=("hflip", "vflip", "rot90"), metadata={"help": f"reference augmentations: {', '.join(AUGMENTATIONS)}"})
    max_bank: int = field(default=65536, metadata={"help": "patches kept per neighbourhood size (greedy coreset above)"})


@dataclass
class _Bank:
    patches: torch.Tensor  # (M, C)
    owner: torch.Tensor  # (M,) index of the reference image each patch came from
    normal: torch.Tensor  # leave-one-out distances of reference patches: the normal scale


class ReferenceScorer:
    mode = "reference"

    def __init__(self, source: FeatureSource, config: ReferenceConfig = ReferenceConfig(), progress: bool = True):
        unknown = set(config.augmentations) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
        self.source = source
        self.config = config
        self.progress = progress
        self.banks: list[_Bank] = []
        self.num_references = 0

    def _augmented_features(self, references: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the references and of each augmentation, with the reference index of each."""
        tensors = torch.stack([self.source.preprocess(image) for image in references])
        variants = [tensors] + [AUGMENTATIONS[name](tensors) for name in self.config.augmentations]
        features, owners = [], []
        for variant in variants:
            for start in range(0, len(variant), self.config.batch_size):
                features.append(self.source.extract(variant[start : start + self.config.batch_size]).float().cpu())
            owners.append(torch.arange(len(references)))
        return torch.cat(features), torch.cat(owners)

    def fit(self, references: list[Image.Image]) -> ReferenceScorer:
        if not references:
            raise AnomalyVLMError("reference scoring needs at least one normal reference image")
        features, owners = self._augmented_features(references)
        self.standardizer = Standardizer(features, self.source.standardize)
        features = self.standardizer(features)
        self.num_references = len(references)
        self.banks = []
        for size in self.config.neighbourhoods:
            patches = as_patches(neighbourhood_average(features, size))
            flat = patches.reshape(-1, patches.shape[-1])
            owner = owners.repeat_interleave(patches.shape[1])
            keep = greedy_coreset(flat, self.config.max_bank)
            bank = _Bank(flat[keep], owner[keep], torch.empty(0))
            bank.normal = self._leave_one_out(bank, patches[: self.num_references])
            self.banks.append(bank)
        return self

    def _leave_one_out(self, bank: _Bank, originals: torch.Tensor) -> torch.Tensor:
        """Each reference's patches (R, N, C) scored against the bank without it; empty for one reference."""
        if self.num_references < 2:
            return torch.empty(0)
        return torch.cat([nearest_distance(originals[j], bank.patches[bank.owner != j]) for j in range(self.num_references)])

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        if not self.banks:
            raise AnomalyVLMError("reference scoring: call fit() with normal reference images first")
        features = self.standardizer(extract_all(self.source, images, self.config.batch_size, "reference features", self.progress))
        grid = features.shape[2:]
        total = torch.zeros(len(images), *grid)
        for size, bank in zip(self.config.neighbourhoods, self.banks):
            patches = as_patches(neighbourhood_average(features, size))
            distances = nearest_distance(patches.reshape(-1, patches.shape[-1]), bank.patches)
            # With one reference there is no leave-one-out scale; the scored set stands in for it.
            normal = bank.normal if len(bank.normal) else distances
            total += normalize_scale(distances, normal).view(len(images), *grid)
        anomaly_map, map_max = finish_maps(total / len(self.banks), self.source.image_size, self.config)
        image_score = z_to_unit(map_max, self.config.midpoint, self.config.width)
        return Prediction(anomaly_map, image_score, {"reference_map_max_z": map_max}, (self.mode,))

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            **self.source.describe(),
            "references": self.num_references,
            "augmentations": list(self.config.augmentations),
            "neighbourhoods": list(self.config.neighbourhoods),
        }

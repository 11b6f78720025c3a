"""Mutual scoring of an unlabeled batch (MuSc-style zero-shot).

Defects are rare and differ from one another, while normal patches recur in almost
every image of a product. So a patch is scored by how far it is from its closest
patch in each *other* image, averaging only the closest fraction of those images
(a defect in some other images then cannot make a normal patch look normal, nor a
repeated defect make itself look normal). Image scores are then re-scored over
image-level neighbours, since similar-looking images should score alike.

Cost: each image is compared with at most `sample_size` others, drawn by a seeded
generator (MuSc's random subsets), so scoring N images costs N x sample_size image
comparisons instead of N x (N - 1). The draw follows the images' content, not their
order: image i's generator is seeded with (seed, rank of i's pixel digest among
the set's), so the same set in any order gives the same score to each image. What is held
at once: the patch features of all N images (float32; 66 x 32 x 32 floats, 270 KB an
image, on the built-in features), one neighbourhood-averaged copy of them, a distance
block of one image's patches x `chunk_images` x patches, and the scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..digests import image_digest
from ..errors import AnomalyVLMError
from .distance_maps import DistanceMapConfig, Standardizer, extract_all, finish_maps, normalize_scale
from .features import FeatureSource
from .neighbours import as_patches, nearest_distance_per_image, neighbourhood_average
from .scorer import Prediction, robust_z, z_to_unit


@dataclass
class MutualConfig(DistanceMapConfig):
    midpoint: float = field(default=2.5, metadata={"help": "z scored 0.5 (F1-best on MVTec bottle)"})
    fraction: float = field(default=0.3, metadata={"help": "share of the other images whose distances are averaged"})
    chunk_images: int = field(default=16, metadata={"help": "other images compared per block (bounds memory)"})
    sample_size: int = field(default=32, metadata={"help": "other images each image is compared with, drawn at random "
                                                          "(seeded); 0 compares with all. Cost grows as images x this. "
                                                          "32 keeps AUROC within 0.01 of all on bottle and KolektorSDD "
                                                          "(benchmarks/mutual_scaling.py)"})
    seed: int = field(default=0, metadata={"help": "seed of the draw of compared images (with sample_size it decides scores)"})
    rescore_neighbours: int = field(default=5, metadata={"help": "image-level neighbours for re-scoring; 0 disables"})
    rescore_weight: float = field(default=0.5, metadata={"help": "weight of the image-level score added to the map maximum"})
    min_images: int = field(default=3, metadata={"help": "fewest images of one product that can be scored"})


class MutualScorer:
    mode = "mutual"

    def __init__(self, source: FeatureSource, config: MutualConfig = MutualConfig(), progress: bool = True):
        self.source = source
        self.config = config
        self.progress = progress

    def comparisons(self, keys: list[str]) -> list[torch.Tensor]:
        """For each of the images named by content `keys`, the indices of the others it is compared with (sorted).

        All others when `sample_size` is 0 or at least N - 1; otherwise exactly
        `sample_size` of them, drawn without replacement by `default_rng([seed, rank])`,
        where rank is the image's place when the set is sorted by key (ties by position).
        """
        count, size = len(keys), self.config.sample_size
        everyone = torch.arange(count)
        if size <= 0 or size >= count - 1:
            return [torch.cat([everyone[:i], everyone[i + 1 :]]) for i in range(count)]
        order = torch.tensor(sorted(range(count), key=lambda i: (keys[i], i)), dtype=torch.long)  # order[rank] = index
        drawn = []
        rank_of = torch.empty(count, dtype=torch.long)
        rank_of[order] = everyone
        for i in range(count):
            rank = int(rank_of[i])
            picks = np.random.default_rng([self.config.seed, rank]).choice(count - 1, size, replace=False)
            picks = picks + (picks >= rank)      # skip the image's own rank
            drawn.append(order[torch.from_numpy(picks)].sort().values)
        return drawn

    def patch_scores(self, features: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        """Mutual scores (B, h, w) per neighbourhood size, each in robust z units, averaged.

        `keys` name the images by content (`score` passes their pixel digests); without
        them the draw follows the features' bytes.
        """
        count = len(features)
        if keys is None:
            keys = [hashlib.sha256(one.contiguous().numpy().tobytes()).hexdigest() for one in features]
        compared = self.comparisons(keys)
        total = torch.zeros(count, *features.shape[2:])
        steps = tqdm(total=count * len(self.config.neighbourhoods), desc="mutual scoring", unit="img",
                     disable=not self.progress, leave=False)
        for size in self.config.neighbourhoods:
            patches = as_patches(neighbourhood_average(features, size)).contiguous()
            scores = torch.empty(count, patches.shape[1])
            for i in range(count):
                keep = max(1, round(self.config.fraction * len(compared[i])))
                distances = self.distances(patches, i, compared[i])
                scores[i] = distances.topk(keep, dim=1, largest=False).values.mean(dim=1)
                steps.update()
            total += normalize_scale(scores, scores).view_as(total)
        steps.close()
        return total / len(self.config.neighbourhoods)

    def distances(self, patches: torch.Tensor, i: int, others: torch.Tensor) -> torch.Tensor:
        """Distance from each patch of image i to its nearest patch in each of the `others` images: (P, len(others))."""
        return nearest_distance_per_image(patches[i], patches[others], self.config.chunk_images)

    def rescore(self, map_max: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Map maxima plus an image-level mutual score: how far each image is from its nearest images.

        Images are described by the mean and spread of their patch features; a part
        unlike its closest neighbours gains, one like them keeps its map score.
        """
        k = min(self.config.rescore_neighbours, len(map_max) - 1)
        if k <= 0 or self.config.rescore_weight == 0:
            return map_max
        descriptors = torch.cat([features.mean(dim=(2, 3)), features.std(dim=(2, 3))], dim=1)
        isolation = torch.empty(len(descriptors))
        for start in range(0, len(descriptors), RESCORE_ROWS):   # N x N distances, RESCORE_ROWS rows at a time
            distances = torch.cdist(descriptors[start : start + RESCORE_ROWS], descriptors)
            rows = torch.arange(len(distances))
            distances[rows, rows + start] = float("inf")
            isolation[start : start + RESCORE_ROWS] = distances.topk(k, dim=1, largest=False).values.mean(dim=1)
        isolation = isolation.numpy()
        return map_max + self.config.rescore_weight * robust_z(isolation, isolation)

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        if len(images) < self.config.min_images:
            raise AnomalyVLMError(
                f"mutual scoring compares the images of one product with each other and needs at least "
                f"{self.config.min_images}; got {len(images)}" + (f" for {object_name!r}" if object_name else "")
                + ". Score more images together, or give normal references (--mode reference --references DIR)."
            )
        size = self.source.working_size(images)
        features = extract_all(self.source, images, size, self.config.batch_size, "mutual features", self.progress)
        features = Standardizer(features, self.source.standardize)(features)
        keys = [image_digest(image) for image in images] if 0 < self.config.sample_size < len(images) - 1 else None
        anomaly_map, map_max = finish_maps(self.patch_scores(features, keys), size, self.config)
        rescored = self.rescore(map_max, features)
        image_score = z_to_unit(rescored, self.config.midpoint, self.config.width)
        return Prediction(anomaly_map, image_score, {"mutual_map_max_z": map_max, "mutual_image_z": rescored}, (self.mode,))

    def describe(self) -> dict:
        return {"mode": self.mode, **self.source.describe(), "neighbourhoods": list(self.config.neighbourhoods),
                "sample_size": self.config.sample_size, "seed": self.config.seed}


RESCORE_ROWS = 1024
"""Images whose image-level distances to all others are held at once in `rescore`."""


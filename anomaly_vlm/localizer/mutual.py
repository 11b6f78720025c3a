"""Mutual scoring of an unlabeled batch (MuSc-style zero-shot).

Defects are rare and differ from one another, while normal patches recur in almost
every image of a product. So a patch is scored by how far it is from its closest
patch in each *other* image, averaging only the closest fraction of those images
(a defect in some other images then cannot make a normal patch look normal, nor a
repeated defect make itself look normal). Image scores are then re-scored over
image-level neighbours, since similar-looking images should score alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

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
    rescore_neighbours: int = field(default=5, metadata={"help": "image-level neighbours for re-scoring; 0 disables"})
    rescore_weight: float = field(default=0.5, metadata={"help": "weight of the image-level score added to the map maximum"})
    min_images: int = field(default=3, metadata={"help": "fewest images of one product that can be scored"})


class MutualScorer:
    mode = "mutual"

    def __init__(self, source: FeatureSource, config: MutualConfig = MutualConfig(), progress: bool = True):
        self.source = source
        self.config = config
        self.progress = progress

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Mutual scores (B, h, w) per neighbourhood size, each in robust z units, averaged."""
        count = len(features)
        keep = max(1, round(self.config.fraction * (count - 1)))
        total = torch.zeros(count, *features.shape[2:])
        steps = tqdm(total=count * len(self.config.neighbourhoods), desc="mutual scoring", unit="img",
                     disable=not self.progress, leave=False)
        for size in self.config.neighbourhoods:
            patches = as_patches(neighbourhood_average(features, size))
            scores = torch.empty(count, patches.shape[1])
            for i in range(count):
                others = torch.cat([patches[:i], patches[i + 1 :]])
                distances = nearest_distance_per_image(patches[i], others, self.config.chunk_images)
                scores[i] = distances.topk(keep, dim=1, largest=False).values.mean(dim=1)
                steps.update()
            total += normalize_scale(scores, scores).view_as(total)
        steps.close()
        return total / len(self.config.neighbourhoods)

    def rescore(self, map_max: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Map maxima plus an image-level mutual score: how far each image is from its nearest images.

        Images are described by the mean and spread of their patch features; a part
        unlike its closest neighbours gains, one like them keeps its map score.
        """
        k = min(self.config.rescore_neighbours, len(map_max) - 1)
        if k <= 0 or self.config.rescore_weight == 0:
            return map_max
        descriptors = torch.cat([features.mean(dim=(2, 3)), features.std(dim=(2, 3))], dim=1)
        distances = torch.cdist(descriptors, descriptors)
        distances.fill_diagonal_(float("inf"))
        isolation = distances.topk(k, dim=1, largest=False).values.mean(dim=1).numpy()
        return map_max + self.config.rescore_weight * robust_z(isolation, isolation)

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        if len(images) < self.config.min_images:
            raise AnomalyVLMError(
                f"mutual scoring compares the images of one product with each other and needs at least "
                f"{self.config.min_images}; got {len(images)}" + (f" for {object_name!r}" if object_name else "")
                + ". Score more images together, or give normal references (--mode reference --references DIR)."
            )
        features = extract_all(self.source, images, self.config.batch_size, "mutual features", self.progress)
        features = Standardizer(features, self.source.standardize)(features)
        anomaly_map, map_max = finish_maps(self.patch_scores(features), self.source.image_size, self.config)
        rescored = self.rescore(map_max, features)
        image_score = z_to_unit(rescored, self.config.midpoint, self.config.width)
        return Prediction(anomaly_map, image_score, {"mutual_map_max_z": map_max, "mutual_image_z": rescored}, (self.mode,))

    def describe(self) -> dict:
        return {"mode": self.mode, **self.source.describe(), "neighbourhoods": list(self.config.neighbourhoods)}

"""Fusing the maps and scores of several modes into one prediction.

Every mode already gives maps and scores on a 0..1 scale (prompt maps are
probabilities; distance maps are put there by `z_to_unit`), so fusion is a weighted
mean. A single mode passes through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from .scorer import AnomalyScorer, Prediction

DEFAULT_WEIGHTS = {"prompt": 1.0, "ensemble": 0.5, "mutual": 1.0, "reference": 1.0, "learned": 1.0}


@dataclass
class FusionConfig:
    weights: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        metadata={"help": "weight per mode; hand-crafted prompts count half, as they are the weakest evidence"},
    )


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == size:
        return maps
    return np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in maps])


def fuse(predictions: dict[str, Prediction], weights: dict[str, float] = DEFAULT_WEIGHTS) -> Prediction:
    """Weighted mean of maps (at the largest map size) and of image scores, per mode name."""
    if not predictions:
        raise ValueError("nothing to fuse")
    if len(predictions) == 1:
        return next(iter(predictions.values()))
    missing = set(predictions) - set(weights)
    if missing:
        raise ValueError(f"no fusion weight for modes {sorted(missing)}")
    size = max((p.anomaly_map.shape[1:] for p in predictions.values()), key=lambda s: s[0] * s[1])
    total = sum(weights[mode] for mode in predictions)
    anomaly_map = sum(weights[m] * _resize(p.anomaly_map, size) for m, p in predictions.items()) / total
    image_score = sum(weights[m] * p.image_score for m, p in predictions.items()) / total
    scores = {f"{m}_score": p.image_score for m, p in predictions.items()}
    for p in predictions.values():
        scores.update(p.scores)
    modes = tuple(m for p in predictions.values() for m in p.modes)
    return Prediction(anomaly_map.astype(np.float32), image_score, scores, modes)


class FusedScorer:
    """Runs several scorers on the same images and fuses them.

    A scorer that cannot run on a set (mutual scoring with too few images) is left
    out for that set; the prediction's `modes` say which contributed.
    """

    mode = "fused"

    def __init__(self, scorers: list[AnomalyScorer], config: FusionConfig = FusionConfig()):
        if not scorers:
            raise ValueError("fusion needs at least one scorer")
        self.scorers = scorers
        self.config = config

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        usable = [s for s in self.scorers if len(images) >= getattr(getattr(s, "config", None), "min_images", 1)]
        return fuse({s.mode: s.score(images, object_name) for s in usable or self.scorers}, self.config.weights)

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "parts": [s.describe() for s in self.scorers],
            "weights": {s.mode: self.config.weights[s.mode] for s in self.scorers},
        }

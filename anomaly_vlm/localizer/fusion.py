"""Fusing the maps and scores of several modes into one prediction.

Every mode already gives maps and scores on a 0..1 scale (prompt maps are
probabilities; distance maps are put there by `z_to_unit`), so without more to go on
fusion is a weighted mean. A single mode passes through unchanged.

Where each mode's scores on known-good parts are known (a learned product), the
modes are first put on one scale: a mode's logits in standard deviations of its own
good parts' image-score logits (`ModeScale`). A 0..1 mean lets the mode whose values
spread widest decide, whatever it knows: on KolektorSDD the reference maps span 0..1
while the learned model's stay near 0 on all but defects, so its ranking of
everything else was lost. Maps and scores of a mode share its scale, so regions are
still proposed at the image thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from PIL import Image

from .scorer import AnomalyScorer, Prediction, logit, z_to_unit

DEFAULT_WEIGHTS = {"prompt": 1.0, "ensemble": 0.5, "mutual": 1.0, "reference": 1.0, "learned": 1.0}
SCALED_MIDPOINT = 3.0
"""Standard deviations above good parts at which a scaled fusion scores 0.5."""
MIN_LOGIT_STD = 0.1
"""Floor on a mode's spread, so near-identical good scores do not make every change look huge."""


@dataclass(frozen=True)
class ModeScale:
    """Mean and spread of one mode's image-score logits on known-good parts it never saw."""

    mean: float
    std: float
    count: int

    def __post_init__(self) -> None:
        if not self.std > 0 or self.count < 2:
            raise ValueError(f"a mode scale needs a positive spread from at least 2 good parts, got {self}")

    @classmethod
    def of(cls, scores: np.ndarray) -> ModeScale:
        logits = logit(scores)
        return cls(float(logits.mean()), max(float(logits.std(ddof=1)), MIN_LOGIT_STD), len(logits))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FusionConfig:
    weights: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        metadata={"help": "weight per mode; hand-crafted prompts count half, as they are the weakest evidence"},
    )
    scales: dict[str, ModeScale] | None = field(
        default=None, metadata={"help": "per mode, its good parts' score scale; given for every fused mode, fusion is on that scale"})


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == size:
        return maps
    return np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in maps])


def fuse(predictions: dict[str, Prediction], weights: dict[str, float] = DEFAULT_WEIGHTS,
         scales: dict[str, ModeScale] | None = None) -> Prediction:
    """Weighted mean of maps (at the largest map size) and of image scores, per mode name.

    With a scale for every mode, the mean is taken of the modes' standardized logits
    and mapped back to 0..1, reaching 0.5 at `SCALED_MIDPOINT` standard deviations.
    """
    if not predictions:
        raise ValueError("nothing to fuse")
    if len(predictions) == 1:
        return next(iter(predictions.values()))
    missing = set(predictions) - set(weights)
    if missing:
        raise ValueError(f"no fusion weight for modes {sorted(missing)}")
    scaled = scales is not None and set(predictions) <= set(scales)

    def standard(mode: str, values: np.ndarray) -> np.ndarray:
        return (logit(values) - scales[mode].mean) / scales[mode].std if scaled else values

    def unit(values: np.ndarray) -> np.ndarray:
        return z_to_unit(values, SCALED_MIDPOINT, 1.0) if scaled else values

    size = max((p.anomaly_map.shape[1:] for p in predictions.values()), key=lambda s: s[0] * s[1])
    total = sum(weights[mode] for mode in predictions)
    anomaly_map = sum(weights[m] * standard(m, _resize(p.anomaly_map, size)) for m, p in predictions.items()) / total
    image_score = sum(weights[m] * standard(m, p.image_score) for m, p in predictions.items()) / total
    scores = {f"{m}_score": p.image_score for m, p in predictions.items()}
    for p in predictions.values():
        scores.update(p.scores)
    modes = tuple(m for p in predictions.values() for m in p.modes)
    return Prediction(unit(anomaly_map).astype(np.float32), unit(image_score), scores, modes)


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
        return fuse({s.mode: s.score(images, object_name) for s in usable or self.scorers}, self.config.weights,
                    self.config.scales)

    def describe(self) -> dict:
        described = {
            "mode": self.mode,
            "parts": [s.describe() for s in self.scorers],
            "weights": {s.mode: self.config.weights[s.mode] for s in self.scorers},
        }
        if self.config.scales:
            described["scales"] = {mode: scale.to_dict() for mode, scale in self.config.scales.items()}
        return described

"""What every scoring mode returns, and the interface scoring runs drive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


@dataclass
class Prediction:
    """Anomaly maps (B, H, W) in 0..1, image scores (B,), the named scores behind them, and the modes used."""

    anomaly_map: np.ndarray
    image_score: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    modes: tuple[str, ...] = ()

    @classmethod
    def concat(cls, parts: list[Prediction]) -> Prediction:
        """One prediction from consecutive batches."""
        return cls(
            np.concatenate([p.anomaly_map for p in parts]),
            np.concatenate([p.image_score for p in parts]),
            {name: np.concatenate([p.scores[name] for p in parts]) for name in parts[0].scores},
            parts[0].modes,
        )

    def take(self, indices: list[int]) -> Prediction:
        """The prediction of some of its images, in the order given."""
        return Prediction(self.anomaly_map[indices], self.image_score[indices],
                          {name: values[indices] for name, values in self.scores.items()}, self.modes)


class AnomalyScorer(Protocol):
    """Scores all images of one product at once (mutual scoring needs the whole set)."""

    mode: str

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction: ...

    def describe(self) -> dict: ...


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Per-image Gaussian smoothing with scipy's defaults (mode 'reflect', truncate 4)."""
    if sigma <= 0:
        return maps
    return np.stack([gaussian_filter(m, sigma=sigma) for m in maps])


def robust_z(scores: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Scores in robust standard deviations above the median of `normal` scores.

    Median and MAD ignore the tail, so a set that still holds some defects (mutual
    scoring) gives nearly the same scale as a clean one.
    """
    median = float(np.median(normal))
    spread = 1.4826 * float(np.median(np.abs(normal - median)))
    return (scores - median) / max(spread, 1e-12)


def logit(values: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Inverse of the logistic: 0..1 scores back to an unbounded scale (clipped at `eps` from 0 and 1)."""
    values = np.clip(np.asarray(values, dtype=np.float64), eps, 1 - eps)
    return np.log(values / (1 - values))


def z_to_unit(z: np.ndarray, midpoint: float, width: float) -> np.ndarray:
    """Logistic map from z units to 0..1, reaching 0.5 at `midpoint` standard deviations."""
    return 1.0 / (1.0 + np.exp(-(z - midpoint) / width))

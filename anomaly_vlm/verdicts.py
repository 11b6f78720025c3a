"""PASS / REVIEW / FAIL: thresholds calibrated on known-good parts, and where they came from.

One cut cannot separate scores that overlap, so inspection lines send the overlap to
a person. The FAIL threshold is an upper prediction bound for a new good part's score
at a target false-alarm rate; the REVIEW threshold is the same bound at a looser rate.
The bounds come, in order of preference, from a product profile, from the references'
leave-one-out scores, from labels (F1-max), else from the middle of the score scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from PIL import Image
from scipy import stats

from .localizer import fuse
from .localizer.fusion import SCALED_MIDPOINT
from .localizer.scorer import logit, z_to_unit
from .metrics import f1_max
from .types import verdict_of
from .vocabulary import Verdict, score_text

ThresholdSource = Literal["fixed", "product", "references", "labels", "default"]


@dataclass(frozen=True)
class Thresholds:
    """The FAIL threshold, the REVIEW threshold below it (None: no band), and how both were chosen."""

    fail: float
    review: float | None = None
    source: ThresholdSource = "default"
    detail: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail <= 1.0:
            raise ValueError(f"the FAIL threshold must be in [0, 1], got {self.fail}")
        if self.review is not None and not 0.0 <= self.review <= self.fail:
            raise ValueError(f"the REVIEW threshold must be in [0, FAIL threshold {self.fail}], got {self.review}")

    def verdict(self, score: float) -> Verdict:
        return verdict_of(score, self.fail, self.review)

    @property
    def lowest(self) -> float:
        """The threshold regions are proposed at: a part sent to review shows where to look."""
        return self.fail if self.review is None else self.review

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        return cls(float(data["fail"]), None if data.get("review") is None else float(data["review"]),
                   data.get("source", "default"), data.get("detail", ""))


@dataclass
class VerdictConfig:
    """How scores become verdicts."""

    threshold: float | None = field(
        default=None, metadata={"help": "FAIL threshold; None ('auto'): calibrated (product, references, labels, "
                                        "else 0.5)"})
    review_threshold: float | None = field(
        default=None, metadata={"help": "REVIEW threshold below the FAIL one; with a fixed --threshold the band is "
                                        "off unless this is given"})
    false_alarm_rate: float = field(
        default=0.01, metadata={"help": "share of good parts allowed to FAIL when calibrating on references"})
    review_rate: float = field(
        default=0.15, metadata={"help": "share of good parts allowed to reach REVIEW (or FAIL) when calibrating"})
    default_review_margin: float = field(
        default=0.1, metadata={"help": "REVIEW band width below 0.5 when nothing can be calibrated on"})

    def __post_init__(self) -> None:
        if not 0.0 < self.false_alarm_rate < self.review_rate < 1.0:
            raise ValueError("need 0 < false_alarm_rate < review_rate < 1, got "
                             f"{self.false_alarm_rate} and {self.review_rate}")


def prediction_bound(scores: np.ndarray, rate: float) -> float:
    """The score a new good part stays below with probability 1 - `rate`, from good parts' `scores`.

    Scores are 0..1 through a logistic, so the bound is taken on their logits: a
    Student-t prediction interval, which widens honestly when only a few parts were
    seen (8 references give a wider bound than 80).
    """
    logits = logit(scores)
    n = len(logits)
    if n < 2:
        raise ValueError("a prediction bound needs the scores of at least 2 good parts")
    spread = max(float(logits.std(ddof=1)), 1e-3)
    return float(z_to_unit(float(logits.mean()) + _prediction_factor(n, rate) * spread, 0.0, 1.0))


def _prediction_factor(count: int, rate: float) -> float:
    """Spreads above the mean of `count` samples that a new draw exceeds with probability `rate` (Student-t)."""
    return float(stats.t.ppf(1 - rate, count - 1)) * float(np.sqrt(1 + 1 / count))


def from_good_scores(scores: np.ndarray, config: VerdictConfig, source: ThresholdSource, what: str) -> Thresholds:
    """Thresholds from the held-out scores of known-good parts (references or a product's good images)."""
    fail = prediction_bound(scores, config.false_alarm_rate)
    review = min(prediction_bound(scores, config.review_rate), fail)
    detail = (f"{what}: FAIL at a {100 * config.false_alarm_rate:g}% and REVIEW at a "
              f"{100 * config.review_rate:g}% target false-alarm rate ({len(scores)} held-out scores)")
    return Thresholds(fail, review, source, detail)


def from_scaled_modes(counts: list[int], config: VerdictConfig, source: ThresholdSource, what: str) -> Thresholds:
    """Thresholds of modes fused on their good parts' scales (`fuse` with scales), from how many parts set each scale.

    On those scales a new good part's fused value is a mean of terms that each have
    mean 0 and spread 1 on good parts, so its spread is at most 1, reached when the
    modes err together (one odd light fools both). The bound is taken at that worst
    case, widened by the Student-t factor of the smallest scale's sample. It is not
    taken from the few held-out fused scores themselves: six images set their mean
    and spread by chance (on MVTec bottle they sat low, and half the test's good parts
    went to REVIEW).
    """
    count = min(counts)
    if count < 2:
        raise ValueError("scaled thresholds need scales set by at least 2 good parts each")

    def bound(rate: float) -> float:
        return float(z_to_unit(_prediction_factor(count, rate), SCALED_MIDPOINT, 1.0))

    fail = bound(config.false_alarm_rate)
    detail = (f"{what}: FAIL at a {100 * config.false_alarm_rate:g}% and REVIEW at a "
              f"{100 * config.review_rate:g}% target false-alarm rate, the fused modes' errors taken as fully "
              f"correlated (scales from {count} or more good parts)")
    return Thresholds(fail, min(bound(config.review_rate), fail), source, detail)


def from_labels(scores: np.ndarray, labels: np.ndarray) -> Thresholds:
    """F1-max FAIL threshold on labelled images; REVIEW down to the lowest-scoring defect above the good median."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    if not np.isin(labels, (0, 1)).all() or len(set(labels.tolist())) < 2:
        raise ValueError("calibrating on labels needs both normal (0) and anomalous (1) images")
    fail = float(np.clip(f1_max(labels, scores)[1], 0.0, 1.0))
    missed = scores[(labels == 1) & (scores < fail)]
    floor = float(np.median(scores[labels == 0]))
    review = float(np.clip(missed.min(), floor, fail)) if missed.size else None
    detail = f"F1-max on the labels of {len(labels)} images (a figure on these images is tuned on them)"
    return Thresholds(fail, review, "labels", detail)


def default_thresholds(config: VerdictConfig) -> Thresholds:
    return Thresholds(0.5, 0.5 - config.default_review_margin, "default",
                      "the middle of the score scale: no product, references or labels to calibrate on")


def fixed_thresholds(config: VerdictConfig) -> Thresholds:
    assert config.threshold is not None
    return Thresholds(config.threshold, config.review_threshold, "fixed", "set by the user")


def held_out_scores(scorer, references: list[Image.Image]) -> np.ndarray:
    """The image scores the references get when each is held out of its own memory bank.

    For fused scorers the other modes score the references as they would any image;
    these scores stand for new good parts, so thresholds calibrated on them are honest.
    """
    parts = getattr(scorer, "scorers", [scorer])
    predictions = {}
    for part in parts:
        if part.mode == "reference":
            predictions[part.mode] = part.leave_one_out()
        elif len(references) >= getattr(getattr(part, "config", None), "min_images", 1):
            predictions[part.mode] = part.score(references)
    if "reference" not in predictions:
        raise ValueError("held-out scores need a reference scorer")
    weights = getattr(getattr(scorer, "config", None), "weights", None)
    return fuse(predictions, weights).image_score if weights else predictions["reference"].image_score


def describe_thresholds(thresholds: dict) -> str:
    """One line for people: the thresholds and how they were chosen."""
    review = f", REVIEW from {score_text(thresholds['review'])}" if thresholds.get("review") is not None else ", no REVIEW band"
    detail = f": {thresholds['detail']}" if thresholds.get("detail") else ""
    return f"FAIL at {score_text(thresholds['fail'])}{review} ({thresholds['source']}{detail})"


def count_verdicts(verdicts: list[Verdict]) -> dict[str, int]:
    return {word: sum(v == word for v in verdicts) for word in ("pass", "review", "fail")}

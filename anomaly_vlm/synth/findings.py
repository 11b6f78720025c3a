"""Simulated localizer findings: ground truth seen through an imperfect localizer.

The assistant is trained on these, so it learns to read proposals that are shifted,
missing or spurious rather than to repeat them. Given the image, each simulated region
carries the look `anomaly_vlm.attributes.measure` finds on it, as an inspection's
regions do: a true region measured on its ground-truth pixels, a false alarm on the
ellipse in its box. So the assistant learns to name a defect from that evidence.
Some findings land in a REVIEW band with weak regions, as a real localizer's unsure
parts do, so the assistant learns to say it is unsure rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..attributes import box_mask, ellipse_mask, measure
from ..proposals import ProposalConfig, make_region
from ..types import Findings, Region
from .ground_truth import GroundTruth


@dataclass
class FindingsNoise:
    miss_rate: float = field(default=0.1, metadata={"help": "chance that a true region is not proposed"})
    false_alarm_rate: float = field(default=0.15, metadata={"help": "chance of one spurious region per image"})
    jitter: float = field(default=0.15, metadata={"help": "box shift and scale noise, as a fraction of the box size"})
    thresholds: tuple[float, float] = field(default=(0.5, 0.5), metadata={
        "help": "span the reported FAIL threshold is drawn from: calibrated thresholds vary by product"})
    review_rate: float = field(default=0.0, metadata={
        "help": "chance that the findings carry a REVIEW band below the FAIL threshold"})
    review_margins: tuple[float, float] = field(default=(0.05, 0.2), metadata={
        "help": "span of the REVIEW band's width below the FAIL threshold"})
    weak_rate: float = field(default=0.0, metadata={
        "help": "chance that findings with a REVIEW band land in it: the localizer unsure, its regions (a spurious "
                "one where it proposed none) as weak as the score, whatever the truth"})
    top_k: int = field(default=ProposalConfig.top_k,
                       metadata={"help": "regions reported at most, strongest first, as the localizer's proposals"})


def _jittered(region: Region, rng: np.random.Generator, jitter: float, width: int, height: int) -> Region:
    x0, y0, x1, y1 = region.box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + rng.normal(0, jitter) * w, (y0 + y1) / 2 + rng.normal(0, jitter) * h
    w, h = w * np.exp(rng.normal(0, jitter)), h * np.exp(rng.normal(0, jitter))
    box = (int(np.clip(cx - w / 2, 0, width - 1)), int(np.clip(cy - h / 2, 0, height - 1)),
           int(np.clip(cx + w / 2, 1, width)), int(np.clip(cy + h / 2, 1, height)))
    box = (box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1))
    peak = rng.uniform(0.6, 0.98)
    area = int(region.area_fraction * width * height * np.exp(rng.normal(0, jitter)))
    return make_region(box, width, height, max(area, 1), peak, peak * rng.uniform(0.6, 0.9))


def _false_alarm(rng: np.random.Generator, width: int, height: int) -> Region:
    w, h = (rng.uniform(0.03, 0.15, 2) * (width, height)).astype(int) + 1
    x0, y0 = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    peak = rng.uniform(0.5, 0.7)
    return make_region((x0, y0, x0 + w, y0 + h), width, height, int(w * h * 0.6), peak, peak * 0.8)


def _measured(region: Region, image: np.ndarray | None, mask: np.ndarray) -> Region:
    return region if image is None else replace(region, attributes=measure(image, mask))


def simulate_findings(truth: GroundTruth, size: tuple[int, int], rng: np.random.Generator,
                      noise: FindingsNoise = FindingsNoise(), image: np.ndarray | None = None,
                      mask: np.ndarray | None = None) -> Findings:
    """Proposals as the localizer might report them for this ground truth, strongest first.

    With `image` (the defective H x W x 3 image), regions carry measured attributes: a
    true region's pixels are those of `mask` (the ground-truth mask; its box when
    None) inside its box, a false alarm's the ellipse in its box. Measuring draws
    nothing from `rng`, so the regions and scores are those drawn without the image.
    """
    width, height = size
    if image is not None and image.shape[:2] != (height, width):
        raise ValueError(f"image shape {image.shape[:2]} does not match the size {size} (width, height)")

    def false_alarm() -> Region:
        alarm = _false_alarm(rng, width, height)
        return _measured(alarm, image, ellipse_mask((height, width), alarm.box))

    regions = []
    for region in truth.regions:
        if rng.random() < noise.miss_rate:
            continue
        inside = box_mask((height, width), region.box)
        pixels = inside & mask if mask is not None and (inside & mask).any() else inside
        regions.append(_measured(_jittered(region, rng, noise.jitter, width, height), image, pixels))
    if rng.random() < noise.false_alarm_rate:
        regions.append(false_alarm())
    regions = sorted(regions, key=lambda r: -r.peak_score)[: noise.top_k]
    if regions:
        score = max(r.peak_score for r in regions) * rng.uniform(0.85, 1.0)
    else:
        score = rng.uniform(0.1, 0.9) * 0.5
    threshold, review = _thresholds(rng, noise)
    if review is not None and review < threshold and noise.weak_rate > 0 and rng.random() < noise.weak_rate:
        regions = regions or [false_alarm()]
        score = float(rng.uniform(review, threshold))
        scale = score * rng.uniform(0.95, 1.0) / regions[0].peak_score
        regions = [_peaked(r, r.peak_score * scale) for r in regions]
    else:
        score = _on_scale(score, threshold)
        regions = [_peaked(r, _on_scale(r.peak_score, threshold)) for r in regions]
    # rounded as Findings.to_dict rounds it, so the block a record rebuilds is the block the model read
    return Findings(round(float(score), 4), threshold, regions, review)


def _peaked(region: Region, peak: float) -> Region:
    """`region` with its peak moved to `peak` (its mean in proportion): regions read on the image score's scale,
    as the localizer's do, whose strongest region peaks near the image score."""
    return replace(region, peak_score=float(peak), mean_score=float(region.mean_score * peak / region.peak_score))


def _thresholds(rng: np.random.Generator, noise: FindingsNoise) -> tuple[float, float | None]:
    """The FAIL threshold and REVIEW threshold (None: no band) the findings report.

    Nothing is drawn for a fixed threshold without a band, so recipes that ask for
    neither give the findings they always gave.
    """
    low, high = noise.thresholds
    threshold = round(float(rng.uniform(low, high)), 2) if high > low else low
    if noise.review_rate <= 0 or rng.random() >= noise.review_rate:
        return threshold, None
    return threshold, round(max(0.0, threshold - float(rng.uniform(*noise.review_margins))), 2)


def _on_scale(score: float, threshold: float) -> float:
    """A score drawn against 0.5 moved onto a scale whose threshold is `threshold`, keeping its side and rank."""
    if score < 0.5:
        return score * threshold / 0.5
    return threshold + (score - 0.5) * (1 - threshold) / 0.5

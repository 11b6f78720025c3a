"""PASS / REVIEW / FAIL: calibration from good parts' held-out scores, labels and defaults; fixed thresholds."""

import numpy as np
import pytest

from anomaly_vlm.types import Findings
from anomaly_vlm.verdicts import (Thresholds, VerdictConfig, default_thresholds, describe_thresholds, fixed_thresholds,
                                  from_good_scores, from_labels, from_scaled_modes, prediction_bound)
from anomaly_vlm.vocabulary import score_text


def _f1(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    tp = np.sum(predicted & (labels == 1))
    return 2 * tp / (predicted.sum() + labels.sum())


def test_three_verdicts_at_the_thresholds():
    thresholds = Thresholds(0.6, 0.4, "fixed")
    assert [thresholds.verdict(s) for s in (0.39, 0.4, 0.59, 0.6, 1.0)] == ["pass", "review", "review", "fail", "fail"]
    assert Thresholds(0.6).verdict(0.59) == "pass" and Thresholds(0.6).lowest == 0.6 and thresholds.lowest == 0.4
    assert Thresholds.from_dict(thresholds.to_dict()) == thresholds
    with pytest.raises(ValueError, match="REVIEW threshold"):
        Thresholds(0.5, 0.7)


def test_prediction_bound_covers_new_good_parts_at_about_the_target_rate():
    rng = np.random.default_rng(0)
    logits = rng.normal(-2.0, 0.5, 200_000)
    population = 1 / (1 + np.exp(-logits))
    misses = []
    for trial in range(200):
        sample = rng.choice(population, 8, replace=False)
        misses.append(np.mean(population >= prediction_bound(sample, 0.05)))
    assert 0.03 < np.mean(misses) < 0.07        # a t prediction interval holds its rate on average, even from 8 parts
    assert prediction_bound(population[:8], 0.01) > prediction_bound(population[:8], 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        prediction_bound(np.array([0.3]), 0.05)


def test_good_scores_give_a_review_band_below_fail():
    config = VerdictConfig(false_alarm_rate=0.01, review_rate=0.2)
    thresholds = from_good_scores(np.array([0.2, 0.25, 0.3, 0.22, 0.28, 0.26]), config, "references", "6 references")
    assert thresholds.source == "references" and 0.26 < thresholds.review < 0.3 < thresholds.fail < 1
    assert "1% " in thresholds.detail and "20% " in thresholds.detail and "6 held-out scores" in thresholds.detail
    with pytest.raises(ValueError, match="false_alarm_rate < review_rate"):
        VerdictConfig(false_alarm_rate=0.2, review_rate=0.1)


def _fused_good_parts(rng, correlation: float, parts: int, counts: tuple[int, int]) -> np.ndarray:
    """Fused scores of new good parts, two modes standardized on small samples of their own good parts."""
    from anomaly_vlm.localizer import ModeScale, Prediction, fuse

    shared = rng.normal(size=parts + sum(counts))
    own = rng.normal(size=(2, parts + sum(counts)))
    logits = [np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * own[m] + offset
              for m, offset in enumerate((-2.0, -6.0))]
    scores = [1 / (1 + np.exp(-x)) for x in logits]
    calibration = [scores[0][parts : parts + counts[0]], scores[1][parts + counts[0] :]]
    scales = {"reference": ModeScale.of(calibration[0]), "learned": ModeScale.of(calibration[1])}
    predictions = {mode: Prediction(np.zeros((parts, 2, 2), np.float32), s[:parts], {}, (mode,))
                   for mode, s in zip(scales, scores)}
    return fuse(predictions, {"reference": 1.0, "learned": 1.0}, scales).image_score


def test_scaled_fusion_thresholds_hold_their_rates_whatever_the_modes_correlation():
    config = VerdictConfig()
    thresholds = from_scaled_modes([30, 6], config, "product", "fused")
    assert thresholds == from_scaled_modes([6, 30], config, "product", "fused")   # the smaller sample decides
    assert from_scaled_modes([30, 30], config, "product", "fused").fail < thresholds.fail
    assert "fully correlated" in thresholds.detail and "6 or more good parts" in thresholds.detail
    rng = np.random.default_rng(0)
    rates = {}
    for correlation in (1.0, 0.0):
        fused = np.concatenate([_fused_good_parts(rng, correlation, 2000, (30, 6)) for _ in range(100)])
        rates[correlation] = (np.mean(fused >= thresholds.fail), np.mean(fused >= thresholds.review))
    assert rates[1.0][0] < 0.02 and 0.10 < rates[1.0][1] < 0.17          # errors in step: about the target rates
    assert rates[0.0][0] < 0.003 and rates[0.0][1] < 0.10                # independent errors: safely under them
    with pytest.raises(ValueError, match="at least 2"):
        from_scaled_modes([30, 1], config, "product", "fused")


def test_labels_give_the_f1max_threshold_and_send_missed_defects_to_review():
    scores, labels = np.array([0.1, 0.2, 0.5, 0.55, 0.7, 0.6, 0.4]), np.array([0, 0, 0, 0, 1, 1, 1])
    thresholds = from_labels(scores, labels)
    assert thresholds.fail == 0.6 and thresholds.source == "labels"
    assert thresholds.review == 0.4 and thresholds.verdict(0.4) == "review"
    assert from_labels(np.array([0.1, 0.3, 0.7, 0.6]), np.array([0, 0, 1, 1])).review is None


@pytest.mark.parametrize("seed", range(5))
def test_labels_threshold_equals_brute_force_f1max(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.15), 0, 1)
    f1 = {t: _f1(scores, labels, t) for t in np.unique(scores)}
    best = max(f1.values())
    threshold = from_labels(scores, labels).fail
    assert _f1(scores, labels, threshold) == pytest.approx(best, abs=1e-12)


def test_labels_need_both_classes():
    with pytest.raises(ValueError, match="both"):
        from_labels(np.array([0.1, 0.2]), np.array([0, 0]))


def test_default_and_fixed_thresholds():
    assert default_thresholds(VerdictConfig()) == Thresholds(0.5, 0.4, "default", default_thresholds(VerdictConfig()).detail)
    fixed = fixed_thresholds(VerdictConfig(threshold=0.7))
    assert (fixed.fail, fixed.review, fixed.source) == (0.7, None, "fixed")
    assert fixed_thresholds(VerdictConfig(threshold=0.7, review_threshold=0.6)).review == 0.6


def test_saturated_scores_and_thresholds_read_with_the_digits_that_decide_them():
    assert [score_text(v) for v in (0.5, 0.25, 1.0, 0.0, 0.9994, 0.99996, 0.0004, 0.996)] == \
        ["0.50", "0.25", "1.00", "0.00", "0.999", "1.0000", "0.0004", "0.996"]
    line = describe_thresholds({"fail": 0.99941, "review": 0.9981, "source": "product"})
    assert line.startswith("FAIL at 0.999, REVIEW from 0.998 (product")
    findings = Findings(0.99972, 0.99941, review_threshold=0.9981)
    assert "image anomaly score: 0.9997 (above the threshold 0.999)" in findings.block()

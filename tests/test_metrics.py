import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anomaly_vlm.metrics import aupro, auroc, average_precision, f1_max, image_metrics, pixel_metrics


@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_ap_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + labels * 0.4, 2)  # rounding creates ties
    assert abs(auroc(labels, scores) - roc_auc_score(labels, scores)) < 1e-6
    assert abs(average_precision(labels, scores) - average_precision_score(labels, scores)) < 1e-6


def test_f1max_and_threshold_against_scikit_learn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300) + labels * 0.3
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best, threshold = f1_max(labels, scores)
    assert abs(best - f1[:-1].max()) < 1e-9
    assert threshold == thresholds[np.argmax(f1[:-1])]


def test_perfect_and_inverted_scores():
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert image_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))["image_f1max_threshold"] == 0.8
    with pytest.raises(ValueError, match="both normal and anomalous"):
        auroc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_aupro_perfect_map_is_one():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:4, 2:4] = True
    maps = masks.astype(float)
    assert aupro(masks, maps) == pytest.approx(1.0)


def test_aupro_hand_computed_two_regions():
    # One image, 20 pixels: region A (2 px), region B (4 px), 14 normal pixels.
    masks = np.zeros((1, 1, 20), bool)
    masks[0, 0, 0:2] = True  # A
    masks[0, 0, 2:6] = True  # keep B separate from A with a gap
    masks[0, 0, 2] = False
    masks[0, 0, 6] = True  # B = pixels 3..6
    scores = np.zeros((1, 1, 20))
    # A fully found at the top; B half found together with 7 normal pixels (FPR = 0.5 > 0.3).
    scores[0, 0, 0:2] = 1.0
    scores[0, 0, 3:5] = 0.5
    scores[0, 0, 7:14] = 0.5
    # Curve: (fpr 0, pro 0) -> (0, 0.5) at threshold 1.0 -> (0.5, 0.75) at 0.5 -> (1, 1).
    # Up to fpr 0.3: pro rises linearly from 0.5 to 0.5 + 0.25 * 0.3 / 0.5 = 0.65.
    expected = (0.5 + 0.65) / 2 * 0.3 / 0.3
    assert aupro(masks, scores) == pytest.approx(expected)


def test_aupro_counts_each_region_equally():
    # A tiny region missed entirely halves PRO even if a huge region is found.
    masks = np.zeros((2, 20, 20), bool)
    masks[0, :10, :] = True  # 200 px region, found
    masks[1, 0, 0] = True  # 1 px region, missed
    maps = np.zeros((2, 20, 20))
    maps[0, :10, :] = 1.0
    # After the big region (PRO 0.5 at FPR 0), the missed pixel ties with all normal
    # pixels at score 0: the curve runs straight to (1, 1), so PRO(0.3) = 0.65.
    assert aupro(masks, maps) == pytest.approx((0.5 + 0.65) / 2, abs=1e-9)


def test_pixel_metrics_shares_one_sort_and_agrees():
    rng = np.random.default_rng(1)
    masks = np.zeros((5, 32, 32), bool)
    masks[:3, 8:16, 8:20] = True
    maps = rng.random(masks.shape) + masks * 0.5
    result = pixel_metrics(masks, maps)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-6)
    assert result["pixel_aupro"] == pytest.approx(aupro(masks, maps))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        pixel_metrics(masks, maps[:, :, :5])

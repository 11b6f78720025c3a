"""Image- and pixel-level anomaly detection metrics, named as anomalib and the papers name them.

All curves come from one sort of the scores, so full MVTec categories (millions of
pixels) evaluate in seconds. Ties are grouped the way scikit-learn groups them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

AUPRO_FPR_LIMIT = 0.3


def _ranked(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None):
    """Cumulative positives, negatives and (optional) weights at each distinct score, highest first.

    Sums are taken at the last element of each run of tied scores, so the order
    within a tie does not matter and an unstable (fast) sort is fine.
    """
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in size")
    order = np.argsort(scores)[::-1]
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1]
    tp = np.cumsum(labels, dtype=np.float64)[last_of_tie]
    fp = (np.arange(1, scores.size + 1, dtype=np.float64)[last_of_tie] - tp)
    weighted = None if weights is None else np.cumsum(np.asarray(weights).ravel()[order])[last_of_tie]
    return tp, fp, scores[last_of_tie].astype(np.float64), weighted


def _check_both_classes(labels: np.ndarray, name: str) -> None:
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        raise ValueError(f"{name} needs both normal and anomalous examples")


def _auroc(tp: np.ndarray, fp: np.ndarray) -> float:
    return float(np.trapezoid(np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]))


def _average_precision(tp: np.ndarray, fp: np.ndarray) -> float:
    return float(np.sum(np.diff(np.r_[0.0, tp / tp[-1]]) * tp / (tp + fp)))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal, as scikit-learn's roc_auc_score)."""
    _check_both_classes(labels, "AUROC")
    tp, fp, _, _ = _ranked(labels, scores)
    return _auroc(tp, fp)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Step-wise average precision (scikit-learn's average_precision_score)."""
    _check_both_classes(labels, "AP")
    tp, fp, _, _ = _ranked(labels, scores)
    return _average_precision(tp, fp)


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds, and that threshold (label = score >= threshold)."""
    _check_both_classes(labels, "F1-max")
    tp, fp, thresholds, _ = _ranked(labels, scores)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """1 / (area of its connected region) for each defect pixel, and the region count."""
    weights = np.zeros(masks.shape, dtype=np.float64)
    regions = 0
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask)
        if count:
            areas = np.bincount(labelled.ravel())
            weights[index] = np.r_[0.0, 1.0 / areas[1:]][labelled]
            regions += count
    return weights, regions


def _aupro(overlap: np.ndarray, fp: np.ndarray, regions: int, fpr_limit: float) -> float:
    pro = np.r_[0.0, overlap / regions]
    fpr = np.r_[0.0, fp / fp[-1]]
    cut = np.searchsorted(fpr, fpr_limit, side="right")
    fpr_kept, pro_kept = fpr[:cut], pro[:cut]
    if cut < fpr.size and fpr_kept[-1] < fpr_limit:
        # interpolate the curve at exactly the limit
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        fpr_kept = np.r_[fpr_kept, fpr_limit]
        pro_kept = np.r_[pro_kept, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)]
    return float(np.trapezoid(pro_kept, fpr_kept) / fpr_limit)


def _check_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks, maps = np.asarray(masks).astype(bool), np.asarray(maps)
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be (N, H, W)")
    _check_both_classes(masks, "pixel metrics")
    return masks, maps


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by the limit.

    PRO at a threshold is the mean, over every connected defect region of every
    image, of the fraction of that region above the threshold. Each region pixel
    adds 1 / (its region's area) to a running sum, so one sort gives the whole curve.
    """
    masks, maps = _check_maps(masks, maps)
    weights, regions = _region_weights(masks)
    _, fp, _, overlap = _ranked(masks, maps, weights)
    return _aupro(overlap, fp, regions, fpr_limit)


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    f1, threshold = f1_max(labels, scores)
    return {
        "image_auroc": auroc(labels, scores),
        "image_ap": average_precision(labels, scores),
        "image_f1max": f1,
        "image_f1max_threshold": threshold,
    }


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """pixel_auroc, pixel_ap and pixel_aupro from a single sort of all pixels."""
    masks, maps = _check_maps(masks, maps)
    weights, regions = _region_weights(masks)
    tp, fp, _, overlap = _ranked(masks, maps, weights)
    return {
        "pixel_auroc": _auroc(tp, fp),
        "pixel_ap": _average_precision(tp, fp),
        "pixel_aupro": _aupro(overlap, fp, regions, AUPRO_FPR_LIMIT),
    }

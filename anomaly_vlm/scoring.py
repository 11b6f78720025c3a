"""What `score` writes from a batch inspection: scores and verdicts, heatmaps and, with ground truth, metrics.

The scores come from the engine's records, so `score` and `report` agree on every
image; only the files written differ. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .engine import failure
from .errors import AnomalyVLMError, DatasetError
from .files import atomic_path, write_json, write_text
from .inspector import BatchRun
from .io import check_mask, load_image
from .metrics import image_metrics, pixel_metrics
from .types import Sample
from .verdicts import count_verdicts
from .visualize import overlay


@dataclass
class ScoreOutputs:
    """One result per scored image, the failures (engine's and masks'), metrics when labelled."""

    results: list[dict]
    failures: list[dict]
    metrics: dict[str, float] = field(default_factory=dict)


def write_score_outputs(run: BatchRun, out: str | Path, save_maps: bool = True) -> ScoreOutputs:
    """scores.csv, results.json, maps/ (overlays of newly scored images, and of any missing) and metrics.json."""
    out = Path(out)
    failures = list(run.failures)
    results, masks, maps = [], [], []
    pixel_truth = bool(run.scored) and all(s.sample.pixel_truth for s in run.scored)
    for scored, inspection in zip(run.scored, run.inspections):
        sample, record = scored.sample, scored.record
        result = {"path": str(sample.path), "score": record.score, "verdict": inspection.verdict,
                  "threshold": inspection.threshold, "review_threshold": inspection.review_threshold,
                  **record.scores, "modes": list(record.modes), "ground_truth": sample.label,
                  "category": sample.category, "defect": sample.defect, "image_size": list(record.image_size),
                  "map_size": list(inspection.map_size), "reused": scored.reused}
        if pixel_truth:
            try:
                masks.append(_mask_of(sample, record.image_size, scored.anomaly_map.shape))
            except DatasetError as exc:
                failures.append(failure(sample.path, str(exc), "mask"))
                continue
            maps.append(scored.anomaly_map)
        if save_maps:
            result["map"] = f"maps/{sample.key}.png"
            _write_overlay(out / result["map"], scored, failures)
        results.append(result)
    metrics = _metrics(results, masks, maps)
    _write(out, run, results, failures, metrics)
    return ScoreOutputs(results, failures, metrics)


def _write_overlay(path: Path, scored, failures: list[dict]) -> None:
    if scored.reused and path.is_file():
        return
    try:
        image = scored.image or load_image(scored.sample.path)
    except AnomalyVLMError as exc:
        failures.append(failure(scored.sample.path, str(exc), "unreadable"))
        return
    with atomic_path(path) as tmp:
        overlay(image, scored.anomaly_map).save(tmp, format="PNG")


def _mask_of(sample: Sample, image_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """The sample's mask at the map's (H, W) `size`; a mask that does not match its image is refused."""
    mask = check_mask(sample, image_size)
    if mask is None:
        return np.zeros(size, dtype=bool)
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def _metrics(results: list[dict], masks: list[np.ndarray], maps: list[np.ndarray]) -> dict[str, float]:
    labelled = [r for r in results if r["ground_truth"] is not None]
    labels = np.array([r["ground_truth"] for r in labelled])
    if len(labelled) < len(results) or len(set(labels.tolist())) < 2:
        return {}
    metrics = image_metrics(labels, np.array([r["score"] for r in labelled]))
    if masks and len(masks) == len(results) and np.any([m.any() for m in masks]):
        shape = maps[0].shape  # sets of other aspects were scored at other sizes: compare at the first's
        maps = [m if m.shape == shape else cv2.resize(m, shape[::-1], interpolation=cv2.INTER_LINEAR) for m in maps]
        masks = [m if m.shape == shape else cv2.resize(m.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
                 for m in masks]
        metrics.update(pixel_metrics(np.stack(masks), np.stack(maps)))
    return metrics


def _write(out: Path, run: BatchRun, results: list[dict], failures: list[dict], metrics: dict) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "verdict", "threshold", "review_threshold"])
    for r in results:
        writer.writerow([r["path"], f"{r['score']:.6f}", r["verdict"], r["threshold"], r["review_threshold"]])
    write_text(out / "scores.csv", buffer.getvalue())
    models = run.scored[0].record.models if run.scored else {}
    counts = count_verdicts([r["verdict"] for r in results])
    write_json(out / "results.json", {"models": models, "thresholds": run.thresholds.to_dict(), "counts": counts,
                                      "images": results, "failures": failures})
    if metrics:
        write_json(out / "metrics.json", {**metrics, "num_images": len(results), "models": models})


def format_metrics(metrics: dict[str, float]) -> str:
    """A two-column table for the terminal."""
    rows = [(k, f"{v:.4f}") for k, v in metrics.items() if isinstance(v, float)]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

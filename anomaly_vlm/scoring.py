"""Zero-shot scoring of image sets: scores, labels, heatmaps and, with ground truth, metrics.

Each image is loaded on its own, so a bad file is reported and skipped while the
rest of the run goes on. Every output file is written atomically.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import AnomalyVLMError
from .files import atomic_path, write_json, write_text
from .io import ImageLimits, load_image, load_mask
from .localizer import Localizer
from .metrics import image_metrics, pixel_metrics
from .types import Sample
from .visualize import overlay


@dataclass
class ScoreConfig:
    threshold: float = field(default=0.5, metadata={"help": "image score at or above which an image is anomalous"})
    batch_size: int = field(default=8, metadata={"help": "images per forward pass"})
    save_maps: bool = field(default=True, metadata={"help": "write heatmap overlays to maps/"})
    limits: ImageLimits = field(default_factory=ImageLimits)


@dataclass
class ScoreRun:
    """What a run produced: one record per scored image, per-file failures, metrics if labelled."""

    results: list[dict]
    failures: list[dict]
    metrics: dict[str, float] = field(default_factory=dict)


def _batches(samples: list[Sample], size: int):
    """Batches that never mix categories, so per-category text prompts apply."""
    for _, group in groupby(samples, key=lambda s: s.category):
        group = list(group)
        for start in range(0, len(group), size):
            yield group[start : start + size]


def score_samples(
    localizer: Localizer,
    samples: list[Sample],
    out: str | Path,
    config: ScoreConfig = ScoreConfig(),
    mode: str = "ensemble",
    progress: bool = True,
) -> ScoreRun:
    out = Path(out)
    models = {**localizer.describe(), "mode": mode}
    results, failures = [], []
    maps_for_metrics: list[np.ndarray] = []
    masks_for_metrics: list[np.ndarray] = []
    pixel_truth = bool(samples) and all(s.pixel_truth for s in samples)
    size = localizer.backbone.image_size
    map_names: set[str] = set()
    bar = tqdm(total=len(samples), desc="scoring", unit="img", disable=not progress)
    for batch in _batches(samples, config.batch_size):
        loaded = []
        for sample in batch:
            try:
                loaded.append((sample, load_image(sample.path, config.limits)))
            except AnomalyVLMError as exc:
                failures.append({"path": str(sample.path), "error": str(exc)})
        bar.update(len(batch) - len(loaded))
        if not loaded:
            continue
        tensors = torch.stack([localizer.backbone.preprocess(image) for _, image in loaded])
        prediction = localizer.predict(tensors, object_name=batch[0].category)
        for i, (sample, image) in enumerate(loaded):
            score = float(prediction.image_score[i])
            record = {
                "path": str(sample.path),
                "score": score,
                "label": "anomalous" if score >= config.threshold else "normal",
                "threshold": config.threshold,
                "global_score": float(prediction.global_score[i]),
                "max_score": float(prediction.max_score[i]),
                "ground_truth": sample.label,
                "category": sample.category,
                "defect": sample.defect,
                "models": models,
            }
            if config.save_maps:
                record["map"] = f"maps/{_unique(sample.key, map_names)}.png"
                with atomic_path(out / record["map"]) as tmp:
                    overlay(image, prediction.anomaly_map[i]).save(tmp, format="PNG")
            if pixel_truth:
                maps_for_metrics.append(prediction.anomaly_map[i])
                masks_for_metrics.append(_mask_of(sample, size))
            results.append(record)
        bar.update(len(loaded))
    bar.close()
    run = ScoreRun(results, failures, _metrics(results, masks_for_metrics, maps_for_metrics))
    _write_outputs(out, run, models)
    return run


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _mask_of(sample: Sample, size: int) -> np.ndarray:
    if sample.mask_path is None:
        return np.zeros((size, size), dtype=bool)
    return load_mask(sample.mask_path, (size, size))


def _metrics(results: list[dict], masks: list[np.ndarray], maps: list[np.ndarray]) -> dict[str, float]:
    labelled = [r for r in results if r["ground_truth"] is not None]
    labels = np.array([r["ground_truth"] for r in labelled])
    if len(labelled) < len(results) or len(set(labels.tolist())) < 2:
        return {}
    metrics = image_metrics(labels, np.array([r["score"] for r in labelled]))
    if masks and len(masks) == len(results) and np.any([m.any() for m in masks]):
        metrics.update(pixel_metrics(np.stack(masks), np.stack(maps)))
    return metrics


def _write_outputs(out: Path, run: ScoreRun, models: dict) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "label", "threshold"])
    for r in run.results:
        writer.writerow([r["path"], f"{r['score']:.6f}", r["label"], r["threshold"]])
    write_text(out / "scores.csv", buffer.getvalue())
    write_json(out / "results.json", {"models": models, "images": run.results, "failures": run.failures})
    if run.metrics:
        write_json(out / "metrics.json", {**run.metrics, "num_images": len(run.results), "models": models})


def format_metrics(metrics: dict[str, float]) -> str:
    """A two-column table for the terminal."""
    rows = [(k, f"{v:.4f}") for k, v in metrics.items() if isinstance(v, float)]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

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
from PIL import Image
from tqdm.auto import tqdm

from .errors import AnomalyVLMError, DatasetError
from .files import atomic_path, write_json, write_text
from .io import ImageLimits, load_mask, load_samples
from .localizer import AnomalyScorer
from .metrics import image_metrics, pixel_metrics
from .types import Sample
from .visualize import overlay


@dataclass
class ScoreConfig:
    threshold: float = field(default=0.5, metadata={"help": "image score at or above which an image is anomalous"})
    save_maps: bool = field(default=True, metadata={"help": "write heatmap overlays to maps/"})
    limits: ImageLimits = field(default_factory=ImageLimits)


@dataclass
class ScoreRun:
    """What a run produced: one record per scored image, per-file failures, metrics if labelled."""

    results: list[dict]
    failures: list[dict]
    metrics: dict[str, float] = field(default_factory=dict)


def score_samples(
    scorer: AnomalyScorer,
    samples: list[Sample],
    out: str | Path,
    config: ScoreConfig = ScoreConfig(),
    progress: bool = True,
) -> ScoreRun:
    """Score every sample, one product category at a time (mutual scoring needs the whole set)."""
    out = Path(out)
    models = scorer.describe()
    results, failures = [], []
    maps_for_metrics: list[np.ndarray] = []
    masks_for_metrics: list[np.ndarray] = []
    pixel_truth = bool(samples) and all(s.pixel_truth for s in samples)
    map_names: set[str] = set()
    bar = tqdm(total=len(samples), desc="scoring", unit="img", disable=not progress)
    for category, group in groupby(samples, key=lambda s: s.category):
        group = list(group)
        loaded = load_samples(group, config.limits, failures)
        bar.update(len(group) - len(loaded))
        if not loaded:
            continue
        try:
            prediction = scorer.score([image for _, image in loaded], object_name=category)
        except AnomalyVLMError as exc:
            failures.extend({"path": str(sample.path), "error": str(exc)} for sample, _ in loaded)
            bar.update(len(loaded))
            continue
        size = prediction.anomaly_map.shape[1:]
        for i, (sample, image) in enumerate(loaded):
            try:
                mask = _mask_of(sample, image.size, size) if pixel_truth else None
            except DatasetError as exc:
                failures.append({"path": str(sample.path), "error": str(exc)})
                bar.update()
                continue
            score = float(prediction.image_score[i])
            record = {
                "path": str(sample.path),
                "score": score,
                "label": "anomalous" if score >= config.threshold else "normal",
                "threshold": config.threshold,
                **{name: float(values[i]) for name, values in prediction.scores.items()},
                "modes": list(prediction.modes),
                "ground_truth": sample.label,
                "category": sample.category,
                "defect": sample.defect,
            }
            if config.save_maps:
                record["map"] = f"maps/{_unique(sample.key, map_names)}.png"
                with atomic_path(out / record["map"]) as tmp:
                    overlay(image, prediction.anomaly_map[i]).save(tmp, format="PNG")
            if pixel_truth:
                maps_for_metrics.append(prediction.anomaly_map[i])
                masks_for_metrics.append(mask)
            results.append(record)
            bar.update()
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


def _mask_of(sample: Sample, image_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """The sample's mask at the map's (H, W) `size`; a mask that does not match its image is refused."""
    if sample.mask_path is None:
        return np.zeros(size, dtype=bool)
    mask = load_mask(sample.mask_path)
    if (mask.shape[1], mask.shape[0]) != tuple(image_size):
        raise DatasetError(f"{sample.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                           f"{sample.path.name} is {image_size[0]}x{image_size[1]}; a mask must have its "
                           "image's size (re-export the mask, or fix the image it belongs to)")
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


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

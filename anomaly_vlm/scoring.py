"""Zero-shot scoring of image sets: scores, labels, heatmaps and, with ground truth, metrics.

Each image is loaded on its own, so a bad file is reported and skipped while the
rest of the run goes on. Every output file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import AnomalyVLMError, DatasetError
from .files import atomic_path, sweep_temporaries, write_json, write_text
from .io import ImageLimits, check_mask, load_samples
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


CHUNK = 16
"""Images scored between writes when each image's score stands alone (not in mutual mode)."""


def _needs_whole_set(models: dict) -> bool:
    """Mutual scoring compares the images of a set with each other: a part of the set scores differently."""
    return any(part.get("mode") == "mutual" for part in models.get("parts", [models]))


class _Records:
    """Per-image results under `records/`, written as each image finishes, so a killed run resumes.

    The map goes first (float16 .npy, read back without pickle) and the JSON record
    last: a record on disk is complete. A record made by other models is not reused.
    """

    def __init__(self, folder: Path, models: dict):
        self.folder, self.models = folder, models

    def read(self, name: str, sample: Sample) -> tuple[dict, np.ndarray] | None:
        record, array = self.folder / f"{name}.json", self.folder / f"{name}.npy"
        try:
            stored = json.loads(record.read_text())
            if stored["models"] != self.models or stored["record"]["path"] != str(sample.path):
                return None
            return stored["record"], np.load(array, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError, KeyError):
            return None

    def write(self, name: str, record: dict, anomaly_map: np.ndarray) -> None:
        with atomic_path(self.folder / f"{name}.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, anomaly_map.astype(np.float16))
        write_json(self.folder / f"{name}.json", {"models": self.models, "record": record})


def score_samples(
    scorer: AnomalyScorer,
    samples: list[Sample],
    out: str | Path,
    config: ScoreConfig = ScoreConfig(),
    progress: bool = True,
) -> ScoreRun:
    """Score every sample, one product category at a time (mutual scoring needs the whole set).

    Each image's result is kept as it finishes; running again into the same `out`
    reuses the finished ones (in mutual mode, a category's set only when complete).
    """
    out = Path(out)
    sweep_temporaries(out)
    models = scorer.describe()
    records = _Records(out / "records", models)
    taken: set[str] = set()
    names = {id(s): _unique(s.key, taken) for s in samples}
    done: dict[int, tuple[dict, np.ndarray, np.ndarray | None]] = {}   # id(sample) -> record, map, mask
    failures: list[dict] = []
    pixel_truth = bool(samples) and all(s.pixel_truth for s in samples)
    bar = tqdm(total=len(samples), desc="scoring", unit="img", disable=not progress)

    def finish(sample: Sample, image_size: tuple[int, int], record: dict, anomaly_map: np.ndarray) -> None:
        try:
            mask = _mask_of(sample, image_size, anomaly_map.shape) if pixel_truth else None
        except DatasetError as exc:
            failures.append({"path": str(sample.path), "error": str(exc)})
        else:
            done[id(sample)] = (record, anomaly_map, mask)
        bar.update()

    for category, group in groupby(samples, key=lambda s: s.category):
        group = list(group)
        stored = {id(s): records.read(names[id(s)], s) for s in group}
        if _needs_whole_set(models) and not all(stored.values()):
            stored = {}
        for sample in group:
            if stored.get(id(sample)):
                record, anomaly_map = stored[id(sample)]
                record.update(threshold=config.threshold,
                              label="anomalous" if record["score"] >= config.threshold else "normal")
                finish(sample, tuple(record["image_size"]), record, anomaly_map)
        todo = [s for s in group if not stored.get(id(s))]
        step = len(todo) if _needs_whole_set(models) else CHUNK
        for start in range(0, len(todo), max(step, 1)):
            loaded = load_samples(todo[start: start + step], config.limits, failures)
            bar.update(len(todo[start: start + step]) - len(loaded))
            if not loaded:
                continue
            try:
                prediction = scorer.score([image for _, image in loaded], object_name=category)
            except AnomalyVLMError as exc:
                failures.extend({"path": str(sample.path), "error": str(exc)} for sample, _ in loaded)
                bar.update(len(loaded))
                continue
            for i, (sample, image) in enumerate(loaded):
                record = _record(sample, image, prediction, i, config)
                if config.save_maps:
                    record["map"] = f"maps/{names[id(sample)]}.png"
                    with atomic_path(out / record["map"]) as tmp:
                        overlay(image, prediction.anomaly_map[i]).save(tmp, format="PNG")
                records.write(names[id(sample)], record, prediction.anomaly_map[i])
                finish(sample, image.size, record, prediction.anomaly_map[i])
    bar.close()
    finished = [done[id(s)] for s in samples if id(s) in done]
    results = [record for record, _, _ in finished]
    masks = [mask for _, _, mask in finished] if pixel_truth else []
    maps = [anomaly_map for _, anomaly_map, _ in finished] if pixel_truth else []
    run = ScoreRun(results, failures, _metrics(results, masks, maps))
    _write_outputs(out, run, models)
    return run


def _record(sample: Sample, image, prediction, i: int, config: ScoreConfig) -> dict:
    score = float(prediction.image_score[i])
    return {
        "path": str(sample.path),
        "score": score,
        "label": "anomalous" if score >= config.threshold else "normal",
        "threshold": config.threshold,
        **{name: float(values[i]) for name, values in prediction.scores.items()},
        "modes": list(prediction.modes),
        "ground_truth": sample.label,
        "category": sample.category,
        "defect": sample.defect,
        "image_size": list(image.size),
    }


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


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

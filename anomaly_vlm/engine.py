"""The one batch runner behind every command: load, score one product at a time, keep records.

Each image is loaded on its own, so a bad file fails alone. Scorers whose images
score each other (mutual) get their product's whole set at once; the others go in
chunks, so memory stays bounded. With a record store, an image whose fingerprint
(models, settings, references, image bytes, and for mutual scoring the whole set)
has a record is not scored again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Literal
from collections.abc import Iterator
from itertools import groupby

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .digests import file_digest, json_digest
from .errors import AnomalyVLMError
from .io import ImageLimits, load_samples
from .localizer import AnomalyScorer, Prediction
from .localizer.factory import for_set, needs_whole_set
from .records import ImageRecord, RecordStore
from .types import Sample

CHUNK = 16
"""Images scored together when each image's score stands alone."""


@dataclass
class EngineConfig:
    """Where scoring runs."""

    engine: Literal["local", "ray"] = field(default="local", metadata={
        "help": "local: this process; ray: a Ray cluster's actor pool, for archives (pip install -e '.[ray]')"})


def scorer_settings(scorer: AnomalyScorer) -> dict:
    """Everything about a scorer that decides a score: what it describes and its full config."""
    data: dict = {"describe": scorer.describe()}
    config = getattr(scorer, "config", None)
    if is_dataclass(config):
        data["config"] = asdict(config)
    if parts := getattr(scorer, "scorers", None):
        data["parts"] = [scorer_settings(part) for part in parts]
    return data


def fingerprint(settings: dict, image: str, image_set: str | None = None) -> str:
    return json_digest({"scorer": settings, "image": image, "set": image_set})[:32]


@dataclass
class ScoredImage:
    """One image's record and map, and its image when it was loaded for this run."""

    sample: Sample
    record: ImageRecord
    anomaly_map: np.ndarray
    reused: bool
    image: Image.Image | None = None


@dataclass
class EngineRun:
    """Scored images in input order, per-file failures ({path, error, kind}) and notices for the user."""

    scored: list[ScoredImage]
    failures: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def reused(self) -> int:
        return sum(s.reused for s in self.scored)

    @property
    def rescored(self) -> int:
        return sum(not s.reused for s in self.scored)


def failure(path, error: str, kind: str) -> dict:
    """`unreadable`: the file cannot be read as an image (as `io.load_samples` reports it); `unscored`: it was
    read, but the mode could not score it; `mask`: its ground-truth mask does not fit it."""
    return {"path": str(path), "error": error, "kind": kind}


class Engine:
    """Digests, fingerprints and records here; the scoring itself in a backend (this process, or Ray)."""

    def __init__(self, scorer: AnomalyScorer, limits: ImageLimits = ImageLimits(), progress: bool = True,
                 chunk: int = CHUNK, backend=None):
        self.scorer, self.limits, self.progress, self.chunk = scorer, limits, progress, chunk
        self.backend = backend or LocalBackend(limits, chunk)
        self.notices: list[str] = []

    def _for_set(self, count: int) -> AnomalyScorer:
        chosen, notice = for_set(self.scorer, count)
        if notice and notice not in self.notices:
            self.notices.append(notice)
        return chosen

    def score(self, images: list[Image.Image], category: str | None = None) -> tuple[AnomalyScorer, Prediction]:
        """Score in-memory images of one product: the scorer that ran, and its prediction."""
        chosen = self._for_set(len(images))
        step = len(images) if needs_whole_set(chosen) else self.chunk
        parts = [chosen.score(images[start: start + step], object_name=category)
                 for start in range(0, len(images), max(step, 1))]
        return chosen, Prediction.concat(parts)

    def run(self, samples: list[Sample], store: RecordStore | None = None, category: str | None = None) -> EngineRun:
        """Score `samples` one product category at a time (`category` names them all as one product)."""
        done: dict[int, ScoredImage] = {}
        failures: list[dict] = []
        bar = tqdm(total=len(samples), desc="scoring", unit="img", disable=not self.progress)
        for product, group in groupby(samples, key=lambda s: category or s.category):
            self._run_group(list(group), product, store, done, failures, bar)
        bar.close()
        return EngineRun([done[id(s)] for s in samples if id(s) in done], failures, list(self.notices))

    def _run_group(self, group: list[Sample], product: str | None, store: RecordStore | None,
                   done: dict[int, ScoredImage], failures: list[dict], bar) -> None:
        digests = {}
        for sample in group:
            try:
                digests[id(sample)] = file_digest(sample.path)
            except OSError as exc:
                failures.append(failure(sample.path, f"{sample.path}: cannot be read ({exc.strerror or exc})",
                                        "unreadable"))
                bar.update()
        group = [s for s in group if id(s) in digests]
        loaded: dict[int, Image.Image] = {}
        scorer = self.scorer
        if needs_whole_set(scorer):
            images = load_samples(group, self.limits, failures)
            bar.update(len(group) - len(images))
            group = [sample for sample, _ in images]
            loaded = {id(sample): image for sample, image in images}
            scorer = self._for_set(len(group))
        whole = needs_whole_set(scorer)
        settings = scorer_settings(scorer)
        image_set = hashlib.sha256("".join(sorted(digests[id(s)] for s in group)).encode()).hexdigest() if whole else None
        prints = {id(s): fingerprint(settings, digests[id(s)], image_set) for s in group}
        stored = {id(s): store.get(prints[id(s)]) if store else None for s in group}
        if whole and not all(stored.values()):
            stored = dict.fromkeys(stored)   # a set scores as a whole or not at all
        for sample in group:
            if stored[id(sample)] is not None:
                record, anomaly_map = stored[id(sample)]
                done[id(sample)] = ScoredImage(sample, record, anomaly_map, True, loaded.get(id(sample)))
                bar.update()
        todo = [s for s in group if stored[id(s)] is None]
        models, produced = scorer.describe(), 0
        for row in self.backend.score(scorer, todo, product, loaded if whole else None, failures):
            record = ImageRecord(prints[id(row.sample)], str(row.sample.path), digests[id(row.sample)], row.score,
                                 row.image_size, row.scores, row.modes, models)
            if store:
                store.put(record, row.anomaly_map)
            done[id(row.sample)] = ScoredImage(row.sample, record, row.anomaly_map, False, row.image)
            produced += 1
            bar.update()
        bar.update(len(todo) - produced)


@dataclass
class Row:
    """One image as a backend scored it: the prediction's row, the image's size, and the image when kept."""

    sample: Sample
    score: float
    anomaly_map: np.ndarray
    scores: dict[str, float]
    modes: tuple[str, ...]
    image_size: tuple[int, int]
    image: Image.Image | None = None


def prediction_rows(samples: list[Sample], images: list[Image.Image], prediction: Prediction,
                    keep_images: bool = True) -> Iterator[Row]:
    for i, (sample, image) in enumerate(zip(samples, images)):
        yield Row(sample, float(prediction.image_score[i]), prediction.anomaly_map[i].astype(np.float32),
                  {name: float(values[i]) for name, values in prediction.scores.items()}, tuple(prediction.modes),
                  image.size, image if keep_images else None)


class LocalBackend:
    """Scores in this process: a whole set at once when its images score each other, else in chunks."""

    def __init__(self, limits: ImageLimits = ImageLimits(), chunk: int = CHUNK):
        self.limits, self.chunk = limits, chunk

    def score(self, scorer: AnomalyScorer, todo: list[Sample], product: str | None,
              loaded: dict[int, Image.Image] | None, failures: list[dict]) -> Iterator[Row]:
        step = len(todo) if loaded is not None else self.chunk
        for start in range(0, len(todo), max(step, 1)):
            chunk = todo[start: start + step]
            pairs = [(s, loaded[id(s)]) for s in chunk] if loaded is not None else load_samples(chunk, self.limits,
                                                                                              failures)
            if not pairs:
                continue
            try:
                prediction = scorer.score([image for _, image in pairs], object_name=product)
            except AnomalyVLMError as exc:
                failures.extend(failure(s.path, f"{s.path}: could not be scored: {exc}", "unscored") for s, _ in pairs)
                continue
            yield from prediction_rows([s for s, _ in pairs], [image for _, image in pairs], prediction)

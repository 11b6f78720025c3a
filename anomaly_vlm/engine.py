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
    def __init__(self, scorer: AnomalyScorer, limits: ImageLimits = ImageLimits(), progress: bool = True,
                 chunk: int = CHUNK):
        self.scorer, self.limits, self.progress, self.chunk = scorer, limits, progress, chunk
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
        step = len(todo) if whole else self.chunk
        for start in range(0, len(todo), max(step, 1)):
            chunk = todo[start: start + step]
            if whole:
                pairs = [(s, loaded[id(s)]) for s in chunk]
            else:
                pairs = load_samples(chunk, self.limits, failures)
                bar.update(len(chunk) - len(pairs))
            if not pairs:
                continue
            try:
                prediction = scorer.score([image for _, image in pairs], object_name=product)
            except AnomalyVLMError as exc:
                failures.extend(failure(s.path, f"{s.path}: could not be scored: {exc}", "unscored") for s, _ in pairs)
                bar.update(len(pairs))
                continue
            models = scorer.describe()
            for i, (sample, image) in enumerate(pairs):
                record = ImageRecord(prints[id(sample)], str(sample.path), digests[id(sample)],
                                     float(prediction.image_score[i]), image.size,
                                     {name: float(values[i]) for name, values in prediction.scores.items()},
                                     tuple(prediction.modes), models)
                if store:
                    store.put(record, prediction.anomaly_map[i])
                done[id(sample)] = ScoredImage(sample, record, prediction.anomaly_map[i].astype(np.float32), False,
                                               image)
                bar.update()


"""One entry point for inspection: localizer, proposals and assistant, loaded once and reused.

The CLI, the reports and the Gradio app all inspect through `Inspector`, so an image
gets the same score, regions and answer whichever door it came in by.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .assistant.backends import Assistant, AssistantOptions, GenerationSettings, build_assistant
from .assistant.dialogue import Dialogue, Turn
from .errors import AnomalyVLMError
from .files import atomic_path, sweep_temporaries, write_json
from .io import ImageLimits, collect_samples, load_image, load_samples
from .localizer import AnomalyScorer, ScorerOptions, build_scorer
from .prompts import load_yaml
from .proposals import ProposalConfig, inspect_prediction
from .types import Inspection, Sample


@dataclass
class InspectorConfig:
    scorer: ScorerOptions = field(default_factory=lambda: ScorerOptions(progress=False))
    threshold: float = field(default=0.5, metadata={"help": "image score and region threshold"})
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    assistant: AssistantOptions = field(default_factory=AssistantOptions)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    limits: ImageLimits = field(default_factory=ImageLimits)
    max_references: int = field(default=16, metadata={"help": "reference images kept per product, first ones first"})
    cached_products: int = field(default=8, metadata={"help": "fitted reference scorers kept, least recently used "
                                                               "dropped first"})


@dataclass
class BatchRun:
    """A folder inspection: the inspections in input order and the files that failed, with why."""

    inspections: list[Inspection]
    paths: list[str]
    failures: list[dict]


def _fingerprint(images: list[Image.Image]) -> str:
    digest = hashlib.sha1()
    for image in images:
        digest.update(f"{image.size}".encode())
        digest.update(np.asarray(image.resize((32, 32))).tobytes())
    return digest.hexdigest()


class Inspector:
    """Inspect images and answer questions about them.

    Scorers are built on first use and cached: one default scorer, and one per set of
    reference images (keyed by their content, and reachable by product name), so a
    second image of the same product reuses the fitted models; the cache is bounded,
    so a long-running app does not grow with every reference set it has seen. Scoring
    is serialised by a lock because torch models are not re-entrant across threads;
    the assistant streams outside it.
    """

    def __init__(self, config: InspectorConfig = InspectorConfig(), scorer: AnomalyScorer | None = None,
                 assistant: Assistant | None = None):
        self.config = config
        self._default_scorer = scorer
        self._assistant = assistant
        self._scorers: OrderedDict[str, AnomalyScorer] = OrderedDict()   # reference fingerprint -> fitted scorer
        self._products: dict[str, str] = {}                               # product name -> fingerprint
        self.notices: list[str] = []
        self._lock = threading.RLock()

    @property
    def assistant(self) -> Assistant:
        with self._lock:
            if self._assistant is None:
                self._assistant = build_assistant(self.config.assistant)
            return self._assistant

    def scorer(self, category: str | None = None, references: list[Image.Image] | None = None) -> AnomalyScorer:
        """The scorer for this product: fitted to `references` when given, else to those last given for `category`."""
        with self._lock:
            if references:
                key = _fingerprint(references[: self.config.max_references])
                if key not in self._scorers:
                    self._scorers[key] = self._build(references[: self.config.max_references])
                    while len(self._scorers) > self.config.cached_products:
                        evicted, _ = self._scorers.popitem(last=False)
                        self._products = {p: k for p, k in self._products.items() if k != evicted}
                self._scorers.move_to_end(key)
                if category:
                    self._products[category] = key
                return self._scorers[key]
            if category in self._products:
                return self._scorers[self._products[category]]
            if self._default_scorer is None:
                self._default_scorer = self._build(None)
            return self._default_scorer

    def _build(self, references: list[Image.Image] | None) -> AnomalyScorer:
        built = build_scorer(self.config.scorer, references)
        self.notices += [n for n in built.notices if n not in self.notices]
        return built.scorer

    def _open(self, image: Image.Image | str | Path) -> tuple[Image.Image, str]:
        if isinstance(image, Image.Image):
            return image.convert("RGB"), getattr(image, "filename", "") or "image"
        return load_image(image, self.config.limits), Path(image).name

    def inspect_many(self, images: list[Image.Image | str | Path], category: str | None = None,
                     references: list[Image.Image] | None = None, image_ids: list[str] | None = None,
                     threshold: float | None = None) -> list[Inspection]:
        """Score images of one product together (mutual scoring compares them with each other)."""
        opened = [self._open(image) for image in images]
        ids = image_ids or [name for _, name in opened]
        pictures = [picture for picture, _ in opened]
        threshold = self.config.threshold if threshold is None else threshold
        scorer = self.scorer(category, references)
        with self._lock:
            prediction = scorer.score(pictures, object_name=category)
        models = scorer.describe()
        return [inspect_prediction(ids[i], prediction.anomaly_map[i], float(prediction.image_score[i]), threshold, models,
                                   pictures[i].size, self.config.proposals, image=pictures[i])
                for i in range(len(pictures))]

    def inspect(self, image: Image.Image | str | Path, category: str | None = None,
                references: list[Image.Image] | None = None, image_id: str | None = None,
                threshold: float | None = None) -> Inspection:
        """Score one image and propose its anomalous regions."""
        return self.inspect_many([image], category, references, [image_id] if image_id else None, threshold)[0]

    def ask(self, inspection: Inspection, question: str, history: list[Turn] = ()) -> Iterator[str]:
        """Stream the assistant's answer to `question` about `inspection`, after the earlier `history` turns."""
        return self.dialogue(inspection, history).ask(question)

    def dialogue(self, inspection: Inspection, history: list[Turn] = ()) -> Dialogue:
        """A conversation about one inspection, for callers that keep its turns (and their flags)."""
        return Dialogue(self.assistant, inspection, settings=self.config.generation, history=list(history))

    def explain(self, inspection: Inspection, question: str | None = None) -> tuple[str, list[str]]:
        """The assistant's written explanation of an inspection, and where it contradicts the findings."""
        dialogue = self.dialogue(inspection)
        for _ in dialogue.ask(question or load_yaml("report.yaml")["explain_question"]):
            pass
        return dialogue.turns[-1].answer, dialogue.turns[-1].flags

    def inspect_batch(self, paths: list[str | Path], out: str | Path | None = None,
                      references: list[Image.Image] | None = None, category: str | None = None,
                      threshold: float | None = None, progress: bool = True) -> BatchRun:
        """Inspect images, folders or dataset roots, one product category at a time (`category` names them all).

        With `out`, each inspection is written as it finishes (`inspections/<key>.json`
        and its anomaly map as `maps/<key>.png`); a re-run reads those back instead of
        scoring again, so an interrupted run keeps what it did.
        """
        samples = collect_samples(paths)
        out = Path(out) if out else None
        if out:
            sweep_temporaries(out)
        done: dict[str, Inspection] = {}
        failures: list[dict] = []
        bar = tqdm(total=len(samples), desc="inspecting", unit="img", disable=not progress)
        for product, group in groupby(samples, key=lambda s: category or s.category):
            group = list(group)
            todo = []
            for sample in group:
                if out and (stored := read_inspection(out, sample)) is not None:
                    done[sample.key] = stored
                else:
                    todo.append(sample)
            pending = load_samples(todo, self.config.limits, failures)
            bar.update(len(group) - len(pending))
            if not pending:
                continue
            try:
                inspections = self.inspect_many([image for _, image in pending], product, references,
                                                [sample.key for sample, _ in pending], threshold)
            except AnomalyVLMError as exc:
                failures += [{"path": str(sample.path), "error": str(exc)} for sample, _ in pending]
                bar.update(len(pending))
                continue
            for (sample, _), inspection in zip(pending, inspections):
                if out:
                    write_inspection(out, sample, inspection)
                done[sample.key] = inspection
                bar.update()
        bar.close()
        ordered = [s for s in samples if s.key in done]
        return BatchRun([done[s.key] for s in ordered], [str(s.path) for s in ordered], failures)


def _record_paths(out: Path, sample: Sample) -> tuple[Path, Path]:
    return out / "inspections" / f"{sample.key}.json", out / "maps" / f"{sample.key}.png"


def write_inspection(out: Path, sample: Sample, inspection: Inspection) -> None:
    """The record and its anomaly map (8-bit PNG), map first: a record on disk always has its map."""
    record, map_path = _record_paths(out, sample)
    with atomic_path(map_path) as tmp:
        Image.fromarray(np.round(np.clip(inspection.anomaly_map, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")
    write_json(record, {**inspection.to_dict(), "path": str(sample.path)})


def read_inspection(out: Path, sample: Sample) -> Inspection | None:
    """A stored inspection of `sample` with its image and map, or None when there is none to reuse."""
    record, map_path = _record_paths(out, sample)
    if not record.is_file() or not map_path.is_file():
        return None
    try:
        data = json.loads(record.read_text())
        if data.get("path") != str(sample.path):
            return None
        inspection = Inspection.from_dict(data)
        inspection.anomaly_map = np.asarray(Image.open(map_path).convert("L"), dtype=np.float32) / 255
        inspection.image = load_image(sample.path)
    except (ValueError, KeyError, OSError, AnomalyVLMError):
        return None
    return inspection

"""One entry point for inspection: scorer, verdicts, proposals and assistant, loaded once and reused.

The CLI, the reports and the Gradio app all inspect through `Inspector`, and every
batch goes through the one engine and record store, so an image gets the same
score, verdict, regions and answer whichever door it came in by.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .assistant.backends import Assistant, AssistantOptions, GenerationSettings, build_assistant
from .assistant.dialogue import Dialogue, Turn
from .digests import images_digest
from .engine import Engine, EngineConfig, EngineRun, ScoredImage
from .files import sweep_temporaries
from .io import ImageLimits, collect_samples, load_image
from .localizer import AnomalyScorer, FusedScorer, FusionConfig, ScorerOptions, build_localizer, build_scorer
from .localizer.factory import product_source
from .localizer.learned import LearnedScorer
from .products import LEARNED_KEY, PROMPTS_KEY, ProductProfile, ProductStore
from .templates import load_yaml
from .proposals import ProposalConfig, look_level, propose, with_attributes
from .ray_engine import RayBackend, RayConfig
from .records import RecordStore
from .types import Inspection, Sample
from .verdicts import (Thresholds, VerdictConfig, default_thresholds, fixed_thresholds, from_good_scores,
                       from_labels, held_out_scores)


@dataclass
class InspectorConfig:
    scorer: ScorerOptions = field(default_factory=lambda: ScorerOptions(progress=False))
    verdicts: VerdictConfig = field(default_factory=VerdictConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    assistant: AssistantOptions = field(default_factory=AssistantOptions)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    limits: ImageLimits = field(default_factory=ImageLimits)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    max_references: int = field(default=16, metadata={"help": "reference images kept per product, first ones first"})
    cached_products: int = field(default=8, metadata={"help": "fitted reference scorers kept, least recently used "
                                                               "dropped first"})


@dataclass
class BatchRun:
    """A batch inspection: inspections in input order (with their engine records), failures, thresholds."""

    inspections: list[Inspection]
    paths: list[str]
    failures: list[dict]
    thresholds: Thresholds
    scored: list[ScoredImage] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def reused(self) -> int:
        return sum(s.reused for s in self.scored)


def build_inspection(image_id: str, anomaly_map: np.ndarray, image_score: float, thresholds: Thresholds,
                     models: dict, image_size: tuple[int, int] | None = None,
                     config: ProposalConfig = ProposalConfig(), image: Image.Image | None = None,
                     notes: str | None = None) -> Inspection:
    """The inspection of one image from its threshold-free score and map.

    Regions are proposed at the lowest threshold whatever the verdict, so a part sent
    to review, or one that passed, still shows any spot worth a look; a part scored
    over it whose map stays under it shows its map's strongest area (`look_level`),
    so no part sent to a person comes without a place to look. `image_size`
    defaults to the map's size, the size the boxes are then in pixels of.

    With the image at hand, each region carries its measured look (`attributes`): its
    mask is the map, resized to the image, at or above the threshold inside its box.
    Without it (batch runs keep no images) the regions have no attributes.
    """
    level = look_level(anomaly_map, image_score, thresholds.lowest)
    regions = propose(anomaly_map, level, config, image_size)
    map_height, map_width = np.shape(anomaly_map)
    size = tuple(image_size) if image_size else (map_width, map_height)
    if image is not None and config.attributes:
        regions = with_attributes(regions, image, anomaly_map, level, size)
    return Inspection(image_id, float(image_score), thresholds.fail, regions, models, size, image=image,
                      anomaly_map=np.asarray(anomaly_map, dtype=np.float32), review_threshold=thresholds.review,
                      threshold_source=thresholds.source, notes=notes, map_size=(map_width, map_height))


def attach_image(inspection: Inspection, image: Image.Image, config: ProposalConfig = ProposalConfig()) -> None:
    """Give a batch inspection (which keeps no image) its image back, and its regions their measured look."""
    if config.attributes:
        lowest = inspection.threshold if inspection.review_threshold is None else inspection.review_threshold
        level = look_level(inspection.anomaly_map, inspection.image_score, lowest)
        inspection.regions = with_attributes(inspection.regions, image, inspection.anomaly_map, level,
                                             inspection.image_size)
    inspection.image = image


@dataclass
class _Fitted:
    scorer: AnomalyScorer
    references: list[Image.Image] = field(default_factory=list)
    profile: ProductProfile | None = None
    held_out: np.ndarray | None = None
    stored: Thresholds | None = None


class Inspector:
    """Inspect images and answer questions about them.

    Scorers are built on first use and cached: one default scorer, one per set of
    reference images (keyed by their content, reachable by product name) and one per
    saved product profile, so a second image of the same product reuses the fitted
    models and its calibrated thresholds. The cache is bounded. Scoring is serialised
    by a lock because torch models are not re-entrant across threads; the assistant
    streams outside it.
    """

    def __init__(self, config: InspectorConfig = InspectorConfig(), scorer: AnomalyScorer | None = None,
                 assistant: Assistant | None = None, products: ProductStore | None = None):
        self.config = config
        self.products = products or ProductStore()
        self._default = _Fitted(scorer) if scorer is not None else None
        self._assistant = assistant
        self._fitted: OrderedDict[str, _Fitted] = OrderedDict()    # reference digest or product:NAME -> fitted
        self._names: dict[str, str] = {}                          # product name -> key in _fitted
        self.notices: list[str] = []
        self._lock = threading.RLock()
        self._backend = None

    @property
    def assistant(self) -> Assistant:
        with self._lock:
            if self._assistant is None:
                self._assistant = build_assistant(self.config.assistant)
            return self._assistant

    def _fit(self, category: str | None, references: list[Image.Image] | None, product: str | None) -> _Fitted:
        with self._lock:
            if product:
                key = f"product:{product}"
                if key not in self._fitted:
                    self._remember(key, self._product(product))
                return self._touch(key, category)
            if references:
                references = references[: self.config.max_references]
                key = images_digest(references)
                if key not in self._fitted:
                    self._remember(key, _Fitted(self._build(references), references))
                return self._touch(key, category)
            if category in self._names:
                return self._fitted[self._names[category]]
            if self._default is None:
                self._default = _Fitted(self._build(None))
            return self._default

    def _product(self, name: str) -> _Fitted:
        """A saved product's scorer: its reference bank, fused with what was learned on it for that feature source.

        Built-in features go with the learned localizer, CLIP features with the
        prompts fine-tuned on the product; either fused scorer has its own thresholds.
        """
        profile = self.products.load(name)
        source = product_source(self.config.scorer, profile.features)
        scorer = self.products.scorer(name, source, progress=False)
        key = scorer.describe().get("features", source.name)
        if profile.learned_folder is not None and source.name == "builtin":
            key = LEARNED_KEY
            scorer = FusedScorer([scorer, LearnedScorer.load(profile.learned_folder)], self._fusion(profile, key))
        elif profile.prompts_folder is not None and source.name == "clip":
            prompts = build_localizer(profile.prompts_folder, "prompt", self.config.scorer.backbone)
            prompts.batch_size = self.config.scorer.batch_size
            key = PROMPTS_KEY
            scorer = FusedScorer([prompts, scorer], self._fusion(profile, key))
        stored = profile.thresholds.get(key)
        return _Fitted(scorer, profile=profile, stored=Thresholds.from_dict(stored) if stored else None)

    def _fusion(self, profile: ProductProfile, key: str) -> FusionConfig:
        """The user's fusion weights, on the good-part scales the product's thresholds were calibrated on."""
        return replace(self.config.scorer.fusion, scales=profile.scales(key))

    def _remember(self, key: str, fitted: _Fitted) -> None:
        self._fitted[key] = fitted
        while len(self._fitted) > self.config.cached_products:
            evicted, _ = self._fitted.popitem(last=False)
            self._names = {p: k for p, k in self._names.items() if k != evicted}

    def _touch(self, key: str, category: str | None) -> _Fitted:
        self._fitted.move_to_end(key)
        if category:
            self._names[category] = key
        return self._fitted[key]

    def scorer(self, category: str | None = None, references: list[Image.Image] | None = None,
               product: str | None = None) -> AnomalyScorer:
        """The scorer for a product: its saved profile, the `references` given, else those last given for `category`."""
        return self._fit(category, references, product).scorer

    def _build(self, references: list[Image.Image] | None) -> AnomalyScorer:
        built = build_scorer(self.config.scorer, references)
        self._notify(built.notices)
        return built.scorer

    def _notify(self, notices: list[str]) -> None:
        self.notices += [n for n in notices if n not in self.notices]

    def thresholds(self, category: str | None = None, references: list[Image.Image] | None = None,
                   product: str | None = None, labelled: tuple[np.ndarray, np.ndarray] | None = None,
                   verdicts: VerdictConfig | None = None) -> Thresholds:
        """FAIL and REVIEW thresholds: fixed, else the product's, the references' leave-one-out, labels, the default."""
        verdicts = verdicts or self.config.verdicts
        if verdicts.threshold is not None:
            return fixed_thresholds(verdicts)
        fitted = self._fit(category, references, product)
        if fitted.stored is not None:
            return fitted.stored
        if len(fitted.references) >= 2:
            with self._lock:
                if fitted.held_out is None:
                    fitted.held_out = held_out_scores(fitted.scorer, fitted.references)
            what = f"{len(fitted.references)} references' leave-one-out scores"
            return from_good_scores(fitted.held_out, verdicts, "references", what)
        if labelled is not None and len(set(np.asarray(labelled[1]).tolist())) == 2:
            return from_labels(*labelled)
        return default_thresholds(verdicts)

    def _open(self, image: Image.Image | str | Path) -> tuple[Image.Image, str]:
        if isinstance(image, Image.Image):
            return image.convert("RGB"), getattr(image, "filename", "") or "image"
        return load_image(image, self.config.limits), Path(image).name

    def inspect_many(self, images: list[Image.Image | str | Path], category: str | None = None,
                     references: list[Image.Image] | None = None, image_ids: list[str] | None = None,
                     threshold: float | None = None, product: str | None = None) -> list[Inspection]:
        """Score images of one product together (mutual scoring compares them with each other).

        `threshold` fixes the FAIL threshold for this call (no REVIEW band); None calibrates.
        """
        opened = [self._open(image) for image in images]
        ids = image_ids or [name for _, name in opened]
        pictures = [picture for picture, _ in opened]
        fitted = self._fit(category, references, product)
        engine = Engine(fitted.scorer, self.config.limits, progress=False)
        with self._lock:
            chosen, prediction = engine.score(pictures, category)
            thresholds = self.thresholds(category, references, product, verdicts=self._verdicts(threshold))
        self._notify(engine.notices)
        models = chosen.describe()
        notes = fitted.profile.notes if fitted.profile else None
        return [build_inspection(ids[i], prediction.anomaly_map[i], float(prediction.image_score[i]), thresholds,
                                 models, pictures[i].size, self.config.proposals, pictures[i], notes)
                for i in range(len(pictures))]

    def _batch_backend(self):
        """None (this process) or, with `engine='ray'`, one Ray backend for the Inspector's life."""
        if self.config.engine.engine == "ray" and self._backend is None:
            self._backend = RayBackend(self.config.ray, self.config.limits)
        return self._backend

    def _verdicts(self, threshold: float | None) -> VerdictConfig:
        if threshold is None:
            return self.config.verdicts
        return replace(self.config.verdicts, threshold=float(threshold), review_threshold=None)

    def inspect(self, image: Image.Image | str | Path, category: str | None = None,
                references: list[Image.Image] | None = None, image_id: str | None = None,
                threshold: float | None = None, product: str | None = None) -> Inspection:
        """Score one image and propose its anomalous regions."""
        return self.inspect_many([image], category, references, [image_id] if image_id else None, threshold,
                                 product)[0]

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
                      threshold: float | None = None, progress: bool = True, product: str | None = None) -> BatchRun:
        """Inspect images, folders or dataset roots (see `inspect_samples`)."""
        return self.inspect_samples(collect_samples(paths), out, references, category, threshold, progress, product)

    def inspect_samples(self, samples: list[Sample], out: str | Path | None = None,
                        references: list[Image.Image] | None = None, category: str | None = None,
                        threshold: float | None = None, progress: bool = True,
                        product: str | None = None) -> BatchRun:
        """Inspect samples one product category at a time (`category` names them all as one product).

        With `out`, each image's record is kept in `out/records/` as it finishes; a re-run
        reuses the records whose fingerprint still matches, so an interrupted run keeps
        what it did and a new threshold relabels without rescoring. Images are not kept
        in memory: `inspection.image` is None, and reports read the file again.
        """
        fitted = self._fit(category or product, references, product)
        engine = Engine(fitted.scorer, self.config.limits, progress, backend=self._batch_backend())
        store = RecordStore(Path(out) / "records") if out else None
        if out:
            sweep_temporaries(out)
        with self._lock:
            run = engine.run(samples, store, category or product)
        self._notify(run.notices)
        labelled = _labels_of(run)
        thresholds = self.thresholds(category or product, references, product, labelled, self._verdicts(threshold))
        notes = fitted.profile.notes if fitted.profile else None
        inspections = [build_inspection(s.sample.key, s.anomaly_map, s.record.score, thresholds, s.record.models,
                                        s.record.image_size, self.config.proposals, None, notes) for s in run.scored]
        return BatchRun(inspections, [str(s.sample.path) for s in run.scored], run.failures, thresholds, run.scored,
                        run.notices)


def _labels_of(run: EngineRun) -> tuple[np.ndarray, np.ndarray] | None:
    labels = [s.sample.label for s in run.scored]
    if not labels or any(label is None for label in labels):
        return None
    return np.array([s.record.score for s in run.scored]), np.array(labels)


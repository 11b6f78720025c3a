"""Assemble localizers and scorers from user-facing options (used by the CLI and the library alike)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from ..clip import BackboneConfig, ClipBackbone, load_backbone
from ..errors import AnomalyVLMError, WeightsNotFoundError
from .checkpoint import load_prompts, read_checkpoint
from .config import ImageScore, LocalizerConfig, PromptConfig
from .features import BuiltinFeatureConfig, BuiltinFeatures, build_feature_source
from .fusion import FusedScorer, FusionConfig
from .model import Localizer
from .mutual import MutualConfig, MutualScorer
from .prompt_learner import PromptEnsemble, PromptLearner
from .reference import ReferenceConfig, ReferenceScorer
from .scorer import AnomalyScorer
from .self_similarity import SelfConfig, SelfScorer

PromptMode = Literal["prompt", "ensemble"]
ScoreMode = Literal["prompt", "ensemble", "mutual", "reference", "self", "fused"]
FeatureChoice = Literal["auto", "builtin", "clip"]


def prompt_mode(prompts: str | Path | None, mode: PromptMode | None = None) -> PromptMode:
    """The mode a run uses: as asked, else learned prompts when a checkpoint is given."""
    return mode or ("prompt" if prompts else "ensemble")


def build_localizer(
    prompts: str | Path | None = None,
    mode: PromptMode | None = None,
    backbone: dict[str, Any] | None = None,
    config: LocalizerConfig | None = None,
    image_score: ImageScore | None = None,
) -> Localizer:
    """A ready localizer.

    `backbone` holds the `BackboneConfig` fields the user set. With a prompt
    checkpoint, its backbone, weights, image size and localizer settings fill the
    rest. Without one, `mode='prompt'` gives freshly initialized learnable prompts
    (to train) and the default, `ensemble`, hand-crafted prompts.
    """
    mode = prompt_mode(prompts, mode)
    given = {k: v for k, v in (backbone or {}).items() if v is not None}
    if mode == "prompt" and prompts:
        meta = read_checkpoint(prompts)
        defaults = {"name": meta.backbone, "weights": meta.weights, "image_size": meta.image_size}
        built = load_backbone(BackboneConfig(**{**defaults, **given}))
        learner, meta = load_prompts(prompts, built)
        localizer = Localizer(built, learner, config or meta.localizer)
    else:
        built = load_backbone(BackboneConfig(**given))
        config = config or LocalizerConfig()
        if mode == "prompt":
            text = PromptLearner(built.text_width, PromptConfig(), deep_prompts_fp16=config.compat).to(built.device)
        else:
            text = PromptEnsemble()
        localizer = Localizer(built, text, config)
    if image_score:
        localizer.config = replace(localizer.config, image_score=image_score)
    return localizer.eval()


@dataclass
class ScorerOptions:
    """Everything that decides how images are scored."""

    mode: ScoreMode | None = field(default=None, metadata={"help": "None: the best the available models and inputs allow"})
    features: FeatureChoice = field(default="auto", metadata={"help": "patch features for mutual/reference: clip when weights load"})
    prompt_checkpoint: str | Path | None = field(default=None, metadata={"help": "folder of learned prompts (train-prompts --out)"})
    backbone: dict[str, Any] = field(default_factory=dict, metadata={"help": "BackboneConfig fields the user set"})
    localizer: LocalizerConfig | None = None
    image_score: ImageScore | None = None
    mutual: MutualConfig = field(default_factory=MutualConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    self_similarity: SelfConfig = field(default_factory=SelfConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    builtin: BuiltinFeatureConfig = field(default_factory=BuiltinFeatureConfig, metadata={
        "help": "the built-in features' resolution and patch grid (a saved product keeps the ones it was fitted with)"})
    batch_size: int = field(default=8, metadata={"help": "images per forward pass, in every mode"})
    keep_aspect: bool | None = field(default=None, metadata={
        "help": "keep each set's aspect ratio (CLIP reads square tiles) instead of squashing images to squares; "
                "default: kept, except with prompts imported from AnomalyCLIP"})
    progress: bool = True

    @property
    def features_keep_aspect(self) -> bool:
        return True if self.keep_aspect is None else self.keep_aspect


@dataclass
class BuiltScorer:
    """A ready scorer, and what the user should be told about how it was chosen."""

    scorer: AnomalyScorer
    notices: list[str]


def build_scorer(options: ScorerOptions = ScorerOptions(), references: list[Image.Image] | None = None) -> BuiltScorer:
    """The scorer for `options`, falling back to download-free features when CLIP weights are missing.

    Without a mode: CLIP prompts (learned if given, else the ensemble), fused with
    reference scoring when references are given; with no CLIP weights, reference
    scoring if references are given, else mutual scoring, on the built-in features.
    """
    mode, notices = options.mode, []
    if mode == "reference" and not references:
        raise AnomalyVLMError("reference mode needs normal reference images (--references DIR)")
    localizer, backbone = None, None
    wants_prompts = mode in (None, "prompt", "ensemble", "fused")
    wants_clip_features = options.features != "builtin" and mode in (None, "mutual", "reference", "self", "fused")
    if wants_prompts or wants_clip_features:
        try:
            if wants_prompts:
                prompt = mode if mode in ("prompt", "ensemble") else None
                localizer = build_localizer(options.prompt_checkpoint, prompt, options.backbone, options.localizer, options.image_score)
                localizer.batch_size = options.batch_size
                if options.keep_aspect is not None:
                    localizer.config = replace(localizer.config, keep_aspect=options.keep_aspect)
                backbone = localizer.backbone
            else:
                backbone = load_backbone(_backbone_config(options))
        except WeightsNotFoundError as exc:
            if mode in ("prompt", "ensemble") or options.features == "clip":
                raise
            reason = str(exc).splitlines()[0]
            notices.append(f"{reason}\nNo CLIP weights: scoring with the built-in features (no download needed). "
                           "To use CLIP, put its weights in place (README, 'Model weights') or pass --weights FILE.")
    source = _feature_source(options, backbone)
    if mode is None:
        mode = "fused" if localizer and references else "prompt" if localizer else "reference" if references else "mutual"
        localizer = localizer if mode in ("fused", "prompt") else None
    parts: list[AnomalyScorer] = [localizer] if localizer is not None and mode in ("prompt", "ensemble", "fused") else []
    if mode == "self":
        parts.append(SelfScorer(source, replace(options.self_similarity, batch_size=options.batch_size), options.progress))
    if mode in ("mutual", "fused"):
        parts.append(MutualScorer(source, replace(options.mutual, batch_size=options.batch_size), options.progress))
    if mode in ("reference", "fused") and references:
        config = replace(options.reference, batch_size=options.batch_size)
        parts.append(ReferenceScorer(source, config, options.progress).fit(references))
    scorer = parts[0] if len(parts) == 1 else FusedScorer(parts, options.fusion)
    return BuiltScorer(scorer, notices)


SELF_NOTICE = ("Scoring each image against its own patches (self mode), the weakest mode: with fewer than {n} "
               "images and no references there is nothing else to compare with. For better results give a few "
               "known-good images (--references DIR), a saved product (--product NAME), score 3 or more images of "
               "the product together, or put the CLIP weights in place (README, 'Model weights').")


def needs_whole_set(scorer: AnomalyScorer) -> bool:
    """Whether the images of a set score each other (mutual scoring): then a set is scored as a whole."""
    parts = getattr(scorer, "scorers", [scorer])
    return any(part.mode == "mutual" for part in parts)


def for_set(scorer: AnomalyScorer, count: int) -> tuple[AnomalyScorer, str | None]:
    """The scorer for a set of `count` images, and a notice when it had to change.

    Mutual scoring needs a few images to compare; fewer are scored by the self mode on
    the same features, so a single photo is still inspected.
    """
    if scorer.mode == "mutual" and count < scorer.config.min_images:
        config = replace(SelfConfig(), batch_size=scorer.config.batch_size)
        return SelfScorer(scorer.source, config, scorer.progress), SELF_NOTICE.format(n=scorer.config.min_images)
    return scorer, None


def product_source(options: ScorerOptions, banks: list[str]):
    """The feature source a saved product is scored on: CLIP when asked, or when it has a CLIP bank and weights load."""
    choice, keep_aspect = options.features, options.features_keep_aspect
    if choice == "auto" and "clip" in banks:
        try:
            return build_feature_source("clip", backbone=load_backbone(_backbone_config(options)), keep_aspect=keep_aspect)
        except WeightsNotFoundError:
            if "builtin" not in banks:
                raise
        choice = "builtin"
    if choice == "clip":
        return build_feature_source("clip", backbone=load_backbone(_backbone_config(options)), keep_aspect=keep_aspect)
    return builtin_source(options)


def _backbone_config(options: ScorerOptions) -> BackboneConfig:
    return BackboneConfig(**{k: v for k, v in options.backbone.items() if v is not None})


def builtin_source(options: ScorerOptions) -> BuiltinFeatures:
    """The built-in features as `options.builtin` configures them, keeping the aspect as the options say."""
    return BuiltinFeatures(replace(options.builtin, keep_aspect=options.features_keep_aspect))


def _feature_source(options: ScorerOptions, backbone: ClipBackbone | None):
    if options.features == "clip" or (options.features == "auto" and backbone is not None):
        return build_feature_source("clip", backbone=backbone, keep_aspect=options.features_keep_aspect)
    return builtin_source(options)


def describe_models(models: dict) -> str:
    """One line naming the models behind a scorer's `describe()`, for people rather than programs."""
    described = []
    for part in models.get("parts", [models]):
        if "prompts" in part:
            described.append(f"{part['mode']} ({part['backbone']}, {part['weights']}, {part['prompts']})")
        else:
            source = f"{part['backbone']} features" if part["features"] == "clip" else "built-in features"
            described.append(f"{part['mode']} ({source})")
    return " + ".join(described)

"""Assemble a localizer from user-facing options (used by the CLI and the library alike)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from ..clip import BackboneConfig, load_backbone
from .checkpoint import load_prompts, read_checkpoint
from .config import ImageScore, LocalizerConfig, PromptConfig
from .model import Localizer
from .prompt_learner import PromptEnsemble, PromptLearner

PromptMode = Literal["prompt", "ensemble"]


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

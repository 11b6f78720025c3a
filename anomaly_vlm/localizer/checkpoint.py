"""Prompt checkpoints: safetensors + JSON config, and import of AnomalyCLIP's releases.

A checkpoint is a folder with `prompts.safetensors` (prompt parameters only) and
`config.json` (backbone, image size, layers, prompt sizes, format version). Loading
checks the backbone so prompts are never silently applied to a CLIP they were not
trained for.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..clip import ClipBackbone
from ..errors import CheckpointError
from ..files import atomic_path, write_json
from .config import LocalizerConfig, PromptConfig
from .prompt_learner import PromptLearner

FORMAT_VERSION = 1
WEIGHTS_FILE = "prompts.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class PromptCheckpoint:
    """The JSON side of a checkpoint: everything needed to rebuild the localizer."""

    backbone: str
    weights: str | None
    image_size: int
    text_width: int
    prompt: PromptConfig = field(default_factory=PromptConfig)
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    source: str = "trained"
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        data = asdict(self)
        data["localizer"]["layers"] = list(self.localizer.layers) if self.localizer.layers else None
        return data

    @classmethod
    def from_json(cls, data: dict, path: Path) -> PromptCheckpoint:
        try:
            version = data["format_version"]
            if version > FORMAT_VERSION:
                raise CheckpointError(f"{path}: format version {version} is newer than this anomaly_vlm ({FORMAT_VERSION}); upgrade it")
            localizer = dict(data["localizer"])
            if localizer.get("layers"):
                localizer["layers"] = tuple(localizer["layers"])
            return cls(
                backbone=data["backbone"],
                weights=data["weights"],
                image_size=int(data["image_size"]),
                text_width=int(data["text_width"]),
                prompt=PromptConfig(**data["prompt"]),
                localizer=LocalizerConfig(**localizer),
                source=data.get("source", "trained"),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: malformed prompt checkpoint config ({exc!r})") from None


def checkpoint_meta(localizer, weights: str | None, source: str) -> PromptCheckpoint:
    """What a checkpoint of `localizer`'s prompt learner records: backbone, weights, sizes and settings."""
    backbone = localizer.backbone
    return PromptCheckpoint(backbone=backbone.name, weights=weights, image_size=backbone.image_size,
                            text_width=backbone.text_width, prompt=localizer.text.config, localizer=localizer.config,
                            source=source)


def save_prompts(folder: str | Path, learner: PromptLearner, meta: PromptCheckpoint) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in learner.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
    write_json(folder / CONFIG_FILE, meta.to_json())
    return folder


def read_checkpoint(folder: str | Path) -> PromptCheckpoint:
    """The checkpoint's config alone (cheap): enough to choose the backbone to build."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{folder}: not a prompt checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}). "
            "Train one with `anomaly-vlm train-prompts` or convert AnomalyCLIP's with `anomaly-vlm import-prompts`."
        )
    try:
        return PromptCheckpoint.from_json(json.loads(config_path.read_text(encoding="utf-8")), config_path)
    except (json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"{folder}: unreadable checkpoint config ({exc})") from None


def load_prompts(folder: str | Path, backbone: ClipBackbone) -> tuple[PromptLearner, PromptCheckpoint]:
    """Prompt learner for `backbone`; refuses checkpoints made for another backbone."""
    meta = read_checkpoint(folder)
    if meta.backbone != backbone.name or meta.text_width != backbone.text_width:
        raise CheckpointError(
            f"{folder}: these prompts were trained for backbone {meta.backbone} (text width {meta.text_width}), "
            f"but the localizer uses {backbone.name} (text width {backbone.text_width}). "
            f"Run with --backbone {meta.backbone}, or train prompts for {backbone.name}."
        )
    learner = PromptLearner(meta.text_width, meta.prompt, deep_prompts_fp16=meta.localizer.compat)
    try:
        learner.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder}: unreadable prompt tensors ({exc})") from None
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: prompt tensors do not match its config ({exc})") from None
    return learner.to(backbone.device), meta


def import_reference(path: str | Path, out: str | Path, backbone: str = "ViT-L-14-336", weights: str = "openai",
                     image_size: int = 518, layers: tuple[int, ...] = (24,)) -> Path:
    """Convert an AnomalyCLIP `torch.save({"prompt_learner": ...})` file into our format.

    Loaded with `weights_only=True`: a file that needs arbitrary code to unpickle is
    refused. The reference's released runs effectively used layer 24 alone (its taps
    aliased one tensor), hence the default `layers`.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch.save zip archive (AnomalyCLIP checkpoints are)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unsafe or corrupt pickles
        raise CheckpointError(f"{path}: refused to load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    learner_state = state.get("prompt_learner") if isinstance(state, dict) else None
    if not isinstance(learner_state, dict) or "ctx_pos" not in learner_state or "ctx_neg" not in learner_state:
        raise CheckpointError(f"{path}: no 'prompt_learner' with 'ctx_pos'/'ctx_neg'; not an AnomalyCLIP checkpoint")
    ctx_pos, ctx_neg = learner_state["ctx_pos"], learner_state["ctx_neg"]
    if ctx_pos.dim() != 4 or ctx_pos.shape[:2] != (1, 1) or ctx_pos.shape != ctx_neg.shape:
        raise CheckpointError(f"{path}: ctx_pos/ctx_neg have shapes {tuple(ctx_pos.shape)}/{tuple(ctx_neg.shape)}, expected (1, 1, n, D)")
    deep = []
    while f"compound_prompts_text.{len(deep)}" in learner_state:
        deep.append(learner_state[f"compound_prompts_text.{len(deep)}"].float())
    width, n_ctx = ctx_pos.shape[3], ctx_pos.shape[2]
    if any(d.dim() != 2 or d.shape[1] != width or d.shape[0] != deep[0].shape[0] for d in deep):
        raise CheckpointError(f"{path}: compound_prompts_text.* do not all have shape (m, {width})")
    prompt = PromptConfig(context_length=n_ctx, deep_depth=len(deep) + 1, deep_length=deep[0].shape[0] if deep else 4)
    learner = PromptLearner(width, prompt, deep_prompts_fp16=True)
    learner.normal_context.data.copy_(ctx_pos[0, 0].float())
    learner.abnormal_context.data.copy_(ctx_neg[0, 0].float())
    for param, value in zip(learner.deep_prompts, deep):
        param.data.copy_(value)
    meta = PromptCheckpoint(
        backbone=backbone, weights=weights, image_size=image_size, text_width=width, prompt=prompt,
        localizer=LocalizerConfig(layers=layers, compat=True, keep_aspect=False), source=f"imported from AnomalyCLIP {path.name}",
    )
    return save_prompts(out, learner, meta)

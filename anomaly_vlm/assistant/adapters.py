"""LoRA adapters on the language model's projections, kept as safetensors beside a JSON config.

Their settings are PEFT's own `LoraConfig`; a scope only picks its target modules.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import CheckpointError

if TYPE_CHECKING:
    from peft import LoraConfig

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LANGUAGE_SCOPES = ("language_model", "text_model")
"""Module-path parts that mark a multimodal model's language model (LLaVA/Qwen2-VL, Idefics3)."""
Scope = Literal["language", "all"]
"""Which projections LoRA wraps: the language model's only (vision tower and projector frozen), or all."""


def target_modules(model, scope: Scope) -> list[str]:
    """Names of the linear projections LoRA wraps.

    For a multimodal model in "language" scope, only modules inside its language model
    qualify, so the vision tower (which also has q/k/v projections) stays untouched.
    """
    import torch

    multimodal = any(part in name.split(".") for name, _ in model.named_modules() for part in LANGUAGE_SCOPES)
    names = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if not isinstance(module, torch.nn.Linear) or parts[-1] not in PROJECTIONS:
            continue
        if scope == "language" and multimodal and not any(p in parts for p in LANGUAGE_SCOPES):
            continue
        names.append(name)
    if not names:
        raise CheckpointError(f"{type(model).__name__}: no {'/'.join(PROJECTIONS)} linear layers to adapt")
    return names


def add_adapter(model, lora: LoraConfig, scope: Scope = "language"):
    """`model` with a trainable LoRA adapter; unless `lora` names its target_modules, `scope` picks them."""
    from peft import get_peft_model

    if lora.target_modules is None:
        lora = dataclasses.replace(lora, target_modules=target_modules(model, scope))
    return get_peft_model(model, lora)


def load_adapter(model, folder: str | Path, trainable: bool = False):
    """Apply an adapter written by `tune` (or any PEFT LoRA folder with safetensors weights)."""
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise CheckpointError(f"{folder}: not an adapter folder (no adapter_config.json); pass the --out of `tune`")
    if not (folder / "adapter_model.safetensors").is_file():
        raise CheckpointError(f"{folder}: adapter weights must be adapter_model.safetensors (pickled .bin is not read)")
    try:
        json.loads((folder / "adapter_config.json").read_text())
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: adapter does not fit this model ({exc})") from None

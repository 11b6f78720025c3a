"""Resumable training state: named tensors and optimizer state as safetensors, the rest as JSON.

Every training loop (prompts, a product's learned localizer, LoRA tuning) checkpoints
through here. A state folder holds `state.json` and the tensor file it names: the
tensors are written under a fresh name first, then `state.json` is replaced
atomically. That rename commits the checkpoint, so a run killed at any moment leaves
the previous checkpoint or the new one, whole. `state.json` also records the run's
identity (the settings that shape its result), and a checkpoint of another run is
refused before anything is restored. Nothing is pickled.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .files import atomic_path, write_json

FORMAT_VERSION = 1
STATE_JSON = "state.json"
OPTIMIZER = "optimizer"
"""The tensor group that holds the optimizer's state; not a name for the caller's groups."""
_RESERVED = ("format", "identity", "tensors", "param_groups", "scheduler")


@dataclass
class TrainingState:
    """A checkpoint read back: the caller's meta and tensor groups (the optimizer is restored already)."""

    meta: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]


def _plain(value: Any) -> torch.Tensor:
    return torch.as_tensor(value).detach().cpu().clone().contiguous()


def save_state(folder: str | Path, identity: dict, tensors: Mapping[str, Mapping[str, torch.Tensor]],
               optimizer: torch.optim.Optimizer, meta: dict, scheduler: Any = None) -> None:
    """Checkpoint tensor groups ({"model": model.state_dict()}), the optimizer and LR scheduler, and `meta`."""
    folder = Path(folder)
    flat = {f"{group}.{name}": _plain(value) for group, named in tensors.items() for name, value in named.items()}
    optim = optimizer.state_dict()
    flat.update({f"{OPTIMIZER}.{index}.{key}": _plain(value)
                 for index, state in optim["state"].items() for key, value in state.items()})
    name = f"state-{secrets.token_hex(4)}.safetensors"
    with atomic_path(folder / name) as tmp:
        save_file(flat, str(tmp), metadata={"format": str(FORMAT_VERSION)})
    record = {**meta, "format": FORMAT_VERSION, "identity": identity, "tensors": name,
              "param_groups": optim["param_groups"]}
    if scheduler is not None:
        record["scheduler"] = scheduler.state_dict()
    write_json(folder / STATE_JSON, record)
    for stale in folder.glob("state-*.safetensors"):
        if stale.name != name:
            stale.unlink(missing_ok=True)


def load_state(folder: str | Path, identity: dict, optimizer: torch.optim.Optimizer,
               scheduler: Any = None) -> TrainingState | None:
    """The checkpoint in `folder`, with the optimizer (and scheduler) restored from it; None if there is none.

    An unreadable checkpoint, or one whose identity differs from `identity`, raises
    CheckpointError before anything is restored.
    """
    folder = Path(folder)
    if not (folder / STATE_JSON).is_file():
        return None
    try:
        record = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        flat = load_file(str(folder / Path(record["tensors"]).name))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(f"{folder}: unreadable training state ({exc!r})") from None
    if record.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{folder}: training state format {record.get('format')!r}, "
                              f"this version reads {FORMAT_VERSION}")
    saved, wanted = record.get("identity") or {}, json.loads(json.dumps(identity))
    if saved != wanted:
        differ = ", ".join(sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k)))
        raise CheckpointError(f"{folder}: holds the training state of another run ({differ} differ); "
                              "resume with the same settings, or start over without resuming")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        group, name = key.split(".", 1)
        groups.setdefault(group, {})[name] = value
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in groups.pop(OPTIMIZER, {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict(record["scheduler"])
    return TrainingState({k: v for k, v in record.items() if k not in _RESERVED}, groups)

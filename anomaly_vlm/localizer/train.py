"""Prompt learning: only the prompt parameters train; CLIP stays frozen.

Resumable: after every epoch the prompts, the optimizer state and the epoch count
are written (safetensors + JSON, atomically) to the output folder; `resume=True`
continues from there with the same data order as an uninterrupted run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import CheckpointError, DatasetError
from ..files import atomic_path, write_json
from ..io import load_image, load_mask
from ..types import Sample
from .checkpoint import PromptCheckpoint, save_prompts
from .losses import image_loss, segmentation_loss
from .model import Localizer
from .prompt_learner import PromptLearner

STATE_WEIGHTS = "train_state.safetensors"
STATE_JSON = "train_state.json"


@dataclass
class TrainConfig:
    """Defaults follow AnomalyCLIP."""

    epochs: int = field(default=15, metadata={"help": "passes over the data"})
    batch_size: int = field(default=8, metadata={"help": "images per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    betas: tuple[float, float] = field(default=(0.5, 0.999), metadata={"help": "Adam betas"})
    seed: int = field(default=111, metadata={"help": "seed for init and data order"})
    num_workers: int = field(default=0, metadata={"help": "data loading processes"})


class PromptTrainingSet(Dataset):
    """Images with labels and, where the dataset has them, masks at the model's input size."""

    def __init__(self, samples: list[Sample], localizer: Localizer):
        unlabeled = [s.path for s in samples if s.label is None]
        if unlabeled:
            raise DatasetError(f"{unlabeled[0]}: training needs labelled images (MVTec/VisA layout); {len(unlabeled)} have none")
        self.samples = samples
        self.backbone = localizer.backbone

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        size = self.backbone.image_size
        image = self.backbone.preprocess(load_image(sample.path))
        if sample.mask_path is not None:
            mask = torch.from_numpy(load_mask(sample.mask_path, (size, size)).astype(np.float32))
        else:
            mask = torch.zeros(size, size)
        return image, mask, sample.label, sample.pixel_truth


@dataclass
class TrainResult:
    epoch_losses: list[float]
    checkpoint: Path


def _save_state(out: Path, learner: PromptLearner, optimizer: torch.optim.Optimizer, epoch: int, losses: list[float], config: TrainConfig) -> None:
    tensors = {f"prompt.{k}": v.detach().cpu().contiguous() for k, v in learner.state_dict().items()}
    optim = optimizer.state_dict()
    for index, state in optim["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_path(out / STATE_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    write_json(out / STATE_JSON, {"epoch": epoch, "losses": losses, "param_groups": optim["param_groups"], "config": asdict(config)})


def _load_state(out: Path, learner: PromptLearner, optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    try:
        meta = json.loads((out / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(out / STATE_WEIGHTS))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{out}: cannot resume, training state unreadable ({exc})") from None
    learner.load_state_dict({k[len("prompt."):]: v for k, v in tensors.items() if k.startswith("prompt.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["epoch"]), list(meta["losses"])


def train_prompts(
    localizer: Localizer,
    samples: list[Sample],
    out: str | Path,
    meta: PromptCheckpoint,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train `localizer.text` (a PromptLearner) on `samples`; write the checkpoint to `out`."""
    learner = localizer.text
    if not isinstance(learner, PromptLearner):
        raise TypeError("train_prompts needs a localizer built with a PromptLearner")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    learner.requires_grad_(True)
    optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr, betas=config.betas)
    start, losses = 0, []
    if resume and (out / STATE_JSON).is_file():
        start, losses = _load_state(out, learner, optimizer)
    dataset = PromptTrainingSet(samples, localizer)
    device = localizer.backbone.device
    for epoch in range(start, config.epochs):
        generator = torch.Generator().manual_seed(config.seed + epoch)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator,
                            num_workers=config.num_workers)
        torch.manual_seed(config.seed + epoch)
        running, steps = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for images, masks, labels, pixel_truth in bar:
            output = localizer(images)
            loss = image_loss(output.global_logits, labels.to(device))
            if pixel_truth.any():
                keep = pixel_truth.to(device)
                loss = loss + segmentation_loss([p[keep] for p in output.layer_probs], masks.to(device)[keep])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running, steps = running + loss.item(), steps + 1
            bar.set_postfix(loss=f"{running / steps:.4f}")
        losses.append(running / max(steps, 1))
        _save_state(out, learner, optimizer, epoch + 1, losses, config)
    learner.requires_grad_(False)
    localizer.clear_text_cache()
    return TrainResult(losses, save_prompts(out, learner, meta))

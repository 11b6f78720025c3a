"""Prompt learning: only the prompt parameters train; CLIP stays frozen.

Resumable: after every epoch the prompts, the optimizer state and the epoch count
are checkpointed in the output folder's `train_state/` (training_state.py);
`resume=True` continues from there with the same data order as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import DatasetError
from ..io import load_image, load_mask
from ..training_state import load_state, save_state
from ..types import Sample
from .checkpoint import PromptCheckpoint, save_prompts
from .losses import image_loss, segmentation_loss
from .model import Localizer
from .prompt_learner import PromptLearner

STATE_DIR = "train_state"


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


def _identity(config: TrainConfig, meta: PromptCheckpoint) -> dict:
    """What must match for a run to resume: the settings that shape it, not `epochs` (a run may be extended)."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("epochs", "num_workers")}
    return {**settings, "model": {k: v for k, v in meta.to_json().items() if k != "source"}}


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
    identity = _identity(config, meta)
    resumed = load_state(out / STATE_DIR, identity, optimizer) if resume else None
    start, losses = 0, []
    if resumed is not None:
        learner.load_state_dict(resumed.tensors["prompts"])
        start, losses = resumed.meta["epoch"], resumed.meta["losses"]
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
        save_state(out / STATE_DIR, identity, {"prompts": learner.state_dict()}, optimizer,
                   {"epoch": epoch + 1, "losses": losses})
    learner.requires_grad_(False)
    localizer.clear_text_cache()
    return TrainResult(losses, save_prompts(out, learner, meta))

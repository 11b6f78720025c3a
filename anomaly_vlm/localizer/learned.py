"""Learn one product from its good images alone (DRAEM's discriminative half).

The U-Net of learned_scorer.py segments simulated defects (simulated_defects.py):
their exact masks are the targets of a focal + dice loss. Optionally the built-in
filter-bank responses (features.py) are fed beside the pixels.

Aspect ratio is kept: every image is resized to one working size whose shorter side
is `image_size` and whose aspect is the training set's median (a KolektorSDD part is
2.5 times taller than wide; squashing it to a square erases thin cracks). Training
uses square crops of the working image; scoring runs on the whole of it.

Some good images are held out of training. Their image scores calibrate a
threshold, and simulated defects on them measure the model on data one may tune on
(`validation` in learned.json), never on the test set.

`members` > 1 trains that many networks with consecutive seeds and averages their
probability maps. Seeds differ widely on real defects (two of one recipe scored
KolektorSDD's cracks at pixel AUROC 0.795 and 0.655); with two members its product went
from 0.857 to 0.891 pixel AUROC, so one seed's luck need not decide a product.

Training is seeded and resumable: the batch of step t is drawn from its own
generator seeded with (seed, t), and model + optimizer state are checkpointed every
`checkpoint_every` steps (training_state.py), so a killed run resumes where it
stopped and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..errors import AnomalyVLMError, CheckpointError
from ..training_state import load_state, save_state
from .learned_config import LearnConfig
from .learned_scorer import LearnedEnsemble, LearnedScorer, LearnedSegmenter
from .simulated_defects import STRIDE, DefectSampler, to_array, to_tensor
from .tiling import working_size

CHECKPOINT_DIR = "checkpoint"


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, gamma: float, dice_weight: float) -> torch.Tensor:
    """Focal loss (as DRAEM's discriminative network) plus soft dice on the defect class."""
    bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
    p = torch.sigmoid(logits)
    p_true = p * masks + (1 - p) * (1 - masks)
    focal = ((1 - p_true) ** gamma * bce).mean()
    if dice_weight <= 0:
        return focal
    intersection = (p * masks).sum()
    dice = 1 - (2 * intersection + 1) / (p.sum() + masks.sum() + 1)
    return focal + dice_weight * dice


def learning_rate(config: LearnConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of `config.lr` at the last step."""
    warmup = max(1, min(50, config.steps // 20))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _identity(config: LearnConfig) -> dict:
    """What must match for a checkpoint to be resumed (not the bookkeeping fields)."""
    values = config.to_dict()
    for key in ("checkpoint_every", "threads"):
        values.pop(key)
    return values


def _split(count: int, config: LearnConfig) -> tuple[list[int], list[int]]:
    holdout = min(config.holdout, max(0, count - 2))
    order = np.random.default_rng([config.seed, 0]).permutation(count)
    return sorted(int(i) for i in order[holdout:]), sorted(int(i) for i in order[:holdout])


def validate(scorer: LearnedScorer, held: list[np.ndarray], config: LearnConfig) -> dict:
    """Image and pixel metrics on simulated defects over held-out good images (data one may tune on)."""
    from ..metrics import image_metrics, pixel_metrics

    if not held:
        return {}
    sampler = DefectSampler(held, dataclasses.replace(config, image_size=max(held[0].shape[:2]), crop=0, flips=False))
    rng = np.random.default_rng([config.seed, 2])
    images, masks = list(held), [np.zeros(h.shape[:2], dtype=bool) for h in held]
    for index in range(len(held)):
        for _ in range(config.validation_per_image):
            image, mask = sampler.sample(rng, index, anomalous=True)
            if mask.any():
                images.append(image)
                masks.append(mask)
    maps, scores = scorer.finish(scorer.predict_maps(to_tensor(images)))
    labels = np.array([m.any() for m in masks])
    result = {"images": len(images), "defective": int(labels.sum())}
    if labels.all() or not labels.any():
        return result
    result.update({k: v for k, v in image_metrics(labels, scores).items() if k == "image_auroc"})
    result.update({k: v for k, v in pixel_metrics(np.stack(masks), maps).items() if k in ("pixel_auroc", "pixel_aupro")})
    return result


def _train_member(member: int, train: list[np.ndarray], folder: Path, config: LearnConfig, bar,
                  callback: Callable[[int, float], None] | None) -> tuple[LearnedSegmenter, dict]:
    """Train ensemble member `member` (seed `config.seed + member`), resuming from its own checkpoint in `folder`."""
    seed = config.seed + member
    sampler = DefectSampler(train, config)
    torch.manual_seed(seed)
    model = LearnedSegmenter(config.width, config.levels, config.features, config.image_size)
    with torch.no_grad():
        inputs = model.inputs(to_tensor(train))
        model.in_mean.copy_(inputs.mean(dim=(0, 2, 3), keepdim=True))
        model.in_std.copy_(inputs.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-4))
        del inputs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    identity = {**_identity(config), "member": member} if config.members > 1 else _identity(config)
    start, record = 0, {"losses": [], "seconds": 0.0}
    try:
        resumed = load_state(folder, identity, optimizer)
    except CheckpointError:
        resumed = None  # another run's checkpoint (or a damaged one): start over and overwrite it
    if resumed is not None:
        model.load_state_dict(resumed.tensors["model"])
        start, record = resumed.meta["step"], resumed.meta
    model.train()
    bar.update(start)
    began, seconds_before = time.perf_counter(), float(record.get("seconds", 0.0))
    for step in range(start, config.steps):
        images, masks = sampler.batch(step, seed, config.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        loss = segmentation_loss(model(images), masks, config.focal_gamma, config.dice_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = float(loss.detach())
        record["losses"].append(loss)
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps:
            record["seconds"] = seconds_before + time.perf_counter() - began
            save_state(folder, identity, {"model": model.state_dict()}, optimizer, {**record, "step": done})
        if callback is not None:
            callback(step, loss)
    record["seconds"] = seconds_before + time.perf_counter() - began if start < config.steps else record["seconds"]
    return model.eval(), record


def learn_product(
    good_images: list[Image.Image],
    out_dir: str | Path,
    config: LearnConfig | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> LearnedScorer:
    """Train on `good_images` (some held out), save `learned.safetensors` + `learned.json` in `out_dir`.

    Resumes from `out_dir/checkpoint/` (member m > 0 of an ensemble: `checkpoint-m/`)
    when it holds a checkpoint of the same run. `callback(step, loss)` is called after
    every step (a test raises from it to simulate a kill).
    """
    config = config or LearnConfig()
    if len(good_images) < 2:
        raise AnomalyVLMError("learn_product needs at least two good images")
    if config.members < 1:
        raise AnomalyVLMError(f"learn_product needs at least one ensemble member, got members={config.members}")
    out_dir = Path(out_dir)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    size = working_size(good_images, config.image_size, STRIDE)
    arrays = [to_array(im, size) for im in good_images]
    train_ids, held_ids = _split(len(arrays), config)
    train, held = [arrays[i] for i in train_ids], [arrays[i] for i in held_ids]

    bar = tqdm(total=config.steps * config.members, desc="learning product", unit="step", disable=not progress)
    trained = [_train_member(member, train, out_dir / (CHECKPOINT_DIR if member == 0 else f"{CHECKPOINT_DIR}-{member}"),
                             config, bar, callback) for member in range(config.members)]
    bar.close()
    members = [model for model, _ in trained]

    scorer = LearnedScorer(members[0] if len(members) == 1 else LearnedEnsemble(members), config, size)
    holdout_scores = scorer.finish(scorer.predict_maps(to_tensor(held)))[1].tolist() if held else []
    scorer.holdout_scores = np.asarray(holdout_scores)
    scorer.record = {
        "holdout_indices": held_ids,
        "holdout_scores": holdout_scores,
        "train_seconds": sum(record["seconds"] for _, record in trained),
        "losses_every_10": trained[0][1]["losses"][::10],
        "validation": validate(scorer, held, config),
    }
    scorer.save(out_dir)
    return scorer

"""Learn one product from its good images alone (DRAEM's discriminative half).

A small U-Net segments simulated defects: every training image is a good image of
the product, cropped and flipped, and (with probability `anomaly_ratio`) given one
or two defects drawn by the package's own simulators, whose exact masks are the
targets (focal + dice loss). Defects land on the part only (`estimate_foreground`;
a texture's foreground is the whole image). Optionally the built-in filter-bank
responses (features.py) are fed beside the pixels.

Aspect ratio is kept: every image is resized to one working size whose shorter side
is `image_size` and whose aspect is the training set's median (a KolektorSDD part is
2.5 times taller than wide; squashing it to a square erases thin cracks). Training
uses square crops of the working image, so a simulator's sizes (fractions of the
shorter side) mean the same thing as on the whole image; scoring runs the fully
convolutional network on the whole working image and gives a map at that size.

Some good images are held out of training. Their image scores calibrate a
threshold, and simulated defects on them measure the model on data one may tune on
(`validation` in learned.json), never on the test set.

Training is seeded and resumable: the batch of step t is drawn from its own
generator seeded with (seed, t), and model + optimizer state are checkpointed
atomically every `checkpoint_every` steps (safetensors + JSON), so a killed run
resumes where it stopped and ends with the same weights as an uninterrupted one.
Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..configs import from_dict
from ..digests import tensors_digest
from ..errors import AnomalyVLMError
from ..files import atomic_path, write_json
from ..synth.foreground import estimate_foreground
from ..synth.simulators import SimulationContext, simulate, simulator_config, visible_change
from ..synth.textures import ProceduralTextures
from .features import BuiltinFeatureConfig, BuiltinFeatures
from .scorer import Prediction, smooth

FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE = "learned.safetensors", "learned.json"
STATE_FILE, STATE_JSON = "state.safetensors", "state.json"
CHECKPOINT_DIR = "checkpoint"

TEXTURE_MIX: dict[str, float] = {
    "perlin": 2.0, "cutpaste": 1.0, "scar": 1.0, "nsa": 1.0, "scratch": 1.5, "crack": 1.0,
    "hole": 1.0, "stain": 1.5, "contamination": 1.5, "missing": 0.5,
}
"""data_recipes/textures.yaml's simulator weights."""
OBJECT_MIX: dict[str, float] = {
    "scratch": 2.0, "crack": 1.5, "hole": 1.5, "stain": 1.5, "contamination": 1.5, "missing": 1.0,
    "perlin": 1.0, "cutpaste": 0.5, "scar": 0.5, "nsa": 1.0,
}
"""data_recipes/objects.yaml's simulator weights."""


@dataclass
class LearnConfig:
    """How one product is learned from its good images."""

    image_size: int = field(default=256, metadata={"help": "shorter side of the working image in pixels (aspect kept)"})
    crop: int = field(default=128, metadata={"help": "side of the square training crops (cut around a defect); 0 = image_size"})
    steps: int = field(default=1500, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "crops per step"})
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate (cosine decay to 1 % after a short warm-up)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "seeds the weights, the holdout choice and every batch"})
    width: int = field(default=8, metadata={"help": "channels of the U-Net's first level (doubling per level)"})
    levels: int = field(default=4, metadata={"help": "U-Net levels (levels - 1 poolings)"})
    features: bool = field(default=True, metadata={"help": "feed the built-in filter-bank responses beside the pixels"})
    content: Literal["object", "texture"] = field(default="object", metadata={"help": "object: defects on the estimated part only; texture: anywhere"})
    simulators: dict[str, float] = field(default_factory=lambda: dict(OBJECT_MIX), metadata={"help": "simulator name -> weight"})
    simulator_options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "simulator name -> config overrides"})
    anomaly_ratio: float = field(default=0.5, metadata={"help": "share of training crops given defects"})
    defects_per_image: tuple[int, int] = field(default=(1, 2), metadata={"help": "defects per anomalous crop, inclusive range"})
    flips: bool = field(default=True, metadata={"help": "random horizontal and vertical flips of training crops"})
    focal_gamma: float = field(default=2.0, metadata={"help": "focal loss exponent"})
    dice_weight: float = field(default=1.0, metadata={"help": "weight of the soft dice loss beside the focal loss"})
    holdout: int = field(default=6, metadata={"help": "good images kept out of training for calibration and validation"})
    validation_per_image: int = field(default=12, metadata={"help": "simulated defects scored per held-out image"})
    map_sigma: float = field(default=4.0, metadata={"help": "Gaussian smoothing of the output map, in working pixels (4 as the other modes)"})
    score_pool: int = field(default=9, metadata={"help": "image score = max of the map averaged over this window (pixels)"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between resumable checkpoints"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 leaves torch's default"})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> LearnConfig:
        return from_dict(cls, values, "learn config")


# The network ------------------------------------------------------------------


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class LearnedSegmenter(nn.Module):
    """U-Net from RGB in 0..1 (plus, optionally, filter-bank responses) to one defect logit per pixel.

    Input statistics are buffers, so the module alone turns an image batch into maps.
    Any height and width work: the input is reflect-padded to a multiple of 2**(levels-1).
    """

    def __init__(self, width: int = 16, levels: int = 4, features: bool = False, image_size: int = 256):
        super().__init__()
        self.levels, self.use_features = levels, features
        self.bank = BuiltinFeatures(BuiltinFeatureConfig(image_size=image_size)) if features else None
        channels = 3 + (len(BuiltinFeatureConfig().sigmas) * 11 if features else 0)
        self.register_buffer("in_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("in_std", torch.ones(1, channels, 1, 1))
        widths = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList([_block(channels if i == 0 else widths[i - 1], widths[i]) for i in range(levels)])
        self.up = nn.ModuleList([_block(widths[i] + widths[i + 1], widths[i]) for i in reversed(range(levels - 1))])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalized network input: pixels, and filter responses when enabled."""
        if self.bank is None:
            return images
        with torch.no_grad():
            return torch.cat([images, self.bank.responses(images)], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        unit = 2 ** (self.levels - 1)
        pad_h, pad_w = (-height) % unit, (-width) % unit
        x = (self.inputs(images) - self.in_mean) / self.in_std
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self.head(x)[..., :height, :width]


def weights_digest(model: nn.Module) -> str:
    """The digest of the model's state (equal digests, equal weights), as every other model is digested."""
    return tensors_digest(model.state_dict())


# Images and simulated batches ---------------------------------------------------


def working_size(images: list[Image.Image], image_size: int) -> tuple[int, int]:
    """(height, width): shorter side `image_size`, the median aspect of `images`, the longer side a multiple of 8."""
    aspects = [im.height / im.width for im in images]
    aspect = float(np.median(aspects))
    if aspect >= 1:  # taller than wide: the width is the shorter side
        return max(image_size, 8 * round(image_size * aspect / 8)), image_size
    return image_size, max(image_size, 8 * round(image_size / aspect / 8))


def to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 at `size` = (height, width), area-resampled."""
    image = image.convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BICUBIC, reducing_gap=None)
    return np.asarray(image, dtype=np.uint8)


def to_tensor(arrays: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).permute(0, 3, 1, 2).float() / 255.0


class DefectSampler:
    """Draws (crop, mask) pairs from good images: a crop, flips, and simulated defects."""

    def __init__(self, images: list[np.ndarray], config: LearnConfig):
        if not config.simulators:
            raise AnomalyVLMError("learn config: name at least one simulator")
        self.images = images
        self.config = config
        self.foregrounds = [estimate_foreground(image, config.content) for image in images]
        self.names = list(config.simulators)
        weights = np.array([config.simulators[n] for n in self.names], dtype=float)
        self.weights = weights / weights.sum()
        self.sim_configs = {n: simulator_config(n, config.simulator_options.get(n, {})) for n in self.names}
        self.textures = ProceduralTextures()
        self.side = config.image_size
        self.crop = min(config.crop or config.image_size, config.image_size)

    def _window(self, rng: np.random.Generator, index: int, flip: tuple[bool, bool]):
        image, foreground = self.images[index], self.foregrounds[index]
        height, width = image.shape[:2]
        ch, cw = min(self.side, height), min(self.side, width)
        top, left = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
        crop = image[top : top + ch, left : left + cw]
        fore = foreground[top : top + ch, left : left + cw]
        if flip[0]:
            crop, fore = crop[:, ::-1], fore[:, ::-1]
        if flip[1]:
            crop, fore = crop[::-1], fore[::-1]
        return np.ascontiguousarray(crop), np.ascontiguousarray(fore)

    def sample(self, rng: np.random.Generator, index: int | None = None, anomalous: bool | None = None):
        """One training pair: HxWx3 uint8 crop and HxW bool mask of what the simulators changed.

        Defects are drawn on an `image_size` square window (so their sizes are
        fractions of the working image's shorter side), then a `crop` square is cut
        from it, around a defect pixel when there is one.
        """
        image, mask = self._simulated(rng, index, anomalous)
        if self.crop >= min(image.shape[:2]):
            return image, mask
        height, width, crop = image.shape[0], image.shape[1], self.crop
        if mask.any():
            ys, xs = np.nonzero(mask)
            pick = int(rng.integers(len(ys)))
            jitter = rng.integers(-crop // 4, crop // 4 + 1, size=2)
            top, left = int(ys[pick] + jitter[0] - crop // 2), int(xs[pick] + jitter[1] - crop // 2)
        else:
            top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
        top, left = min(max(top, 0), height - crop), min(max(left, 0), width - crop)
        return image[top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]

    def _simulated(self, rng: np.random.Generator, index: int | None, anomalous: bool | None):
        config = self.config
        index = int(rng.integers(len(self.images))) if index is None else index
        flip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if config.flips else (False, False)
        normal, foreground = self._window(rng, index, flip)
        mask = np.zeros(normal.shape[:2], dtype=bool)
        anomalous = bool(rng.random() < config.anomaly_ratio) if anomalous is None else anomalous
        if not anomalous or not foreground.any():
            return normal, mask
        peers = [i for i in range(len(self.images)) if i != index] or [index]

        def other() -> np.ndarray:
            return self._window(rng, peers[int(rng.integers(len(peers)))], (False, False))[0]

        context = SimulationContext(rng, foreground, self.textures, other)
        image = normal
        low, high = config.defects_per_image
        for _ in range(int(rng.integers(low, high + 1))):
            name = self.names[int(rng.choice(len(self.names), p=self.weights))]
            try:
                defect = simulate(name, image, context, self.sim_configs[name])
            except ValueError:
                continue  # a draw that changed nothing visible: the crop keeps its other defects
            image, mask = defect.image, mask | defect.mask
        mask, _ = visible_change(normal, image, mask)
        image = np.where(mask[..., None], image, normal)
        return image, mask

    def batch(self, step: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, 1, step])
        pairs = [self.sample(rng) for _ in range(size)]
        images = to_tensor([p[0] for p in pairs])
        masks = torch.from_numpy(np.stack([p[1] for p in pairs])).float().unsqueeze(1)
        return images, masks


# Loss, schedule, checkpoints -------------------------------------------------------


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


def _save_state(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, record: dict) -> None:
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step), "format": str(FORMAT_VERSION)})
    write_json(folder / STATE_JSON, {**record, "step": step, "format": FORMAT_VERSION})


def _load_state(folder: Path, identity: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    """The saved record if `folder` holds a consistent checkpoint of this very run, else None."""
    try:
        record = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_FILE))
        from safetensors import safe_open

        with safe_open(str(folder / STATE_FILE), "pt") as handle:
            saved_step = int(handle.metadata()["step"])
    except (OSError, ValueError, KeyError):
        return None
    if record.get("identity") != identity or record.get("step") != saved_step:
        return None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = optimizer.state_dict()
    for index in state["param_groups"][0]["params"]:
        keys = [k for k in tensors if k.startswith(f"optim.{index}.")]
        if keys:
            state["state"][index] = {k.split(".", 2)[2]: tensors[k] for k in keys}
    optimizer.load_state_dict(state)
    return record


# The scorer ------------------------------------------------------------------------


class LearnedScorer:
    """Scores images of the learned product: per-pixel defect probability and its pooled maximum."""

    mode = "learned"

    def __init__(self, model: LearnedSegmenter, config: LearnConfig, size: tuple[int, int], record: dict | None = None):
        self.model = model.eval()
        self.config = config
        self.size = (int(size[0]), int(size[1]))
        self.record = record or {}
        self.holdout_scores = np.asarray(self.record.get("holdout_scores", []), dtype=np.float64)

    @torch.no_grad()
    def predict_maps(self, tensors: torch.Tensor, batch_size: int = 4) -> np.ndarray:
        """Raw probabilities (B, H, W) for preprocessed images."""
        out = [torch.sigmoid(self.model(tensors[i : i + batch_size]))[:, 0] for i in range(0, len(tensors), batch_size)]
        return torch.cat(out).numpy().astype(np.float32)

    def finish(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed 0..1 maps and image scores (max of the window-averaged map)."""
        maps = smooth(probabilities, self.config.map_sigma).astype(np.float32)
        pool = self.config.score_pool
        pooled = F.avg_pool2d(torch.from_numpy(maps)[:, None], pool, stride=1, padding=pool // 2, count_include_pad=False)
        return np.clip(maps, 0, 1), pooled.flatten(1).max(dim=1).values.numpy().astype(np.float64).clip(0, 1)

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        if not images:
            raise AnomalyVLMError("learned scoring: no images given")
        maps, scores = [], []
        for start in range(0, len(images), 8):
            tensors = to_tensor([to_array(im, self.size) for im in images[start : start + 8]])
            m, s = self.finish(self.predict_maps(tensors))
            maps.append(m)
            scores.append(s)
        maps_all, scores_all = np.concatenate(maps), np.concatenate(scores)
        return Prediction(maps_all, scores_all, {"learned_map_max": scores_all.copy()}, (self.mode,))

    def threshold(self, false_alarm: float = 0.05) -> float:
        """A score threshold from the held-out good images alone.

        A handful of held-out scores cannot show a 5 % tail, so the threshold is the
        larger of their maximum and a normal fit in logit space at 1 - false_alarm.
        """
        if not len(self.holdout_scores):
            raise AnomalyVLMError("learned scorer: no held-out scores to calibrate on (holdout was 0)")
        from scipy.stats import norm

        logits = np.log(np.clip(self.holdout_scores, 1e-6, 1 - 1e-6) / (1 - np.clip(self.holdout_scores, 1e-6, 1 - 1e-6)))
        spread = logits.std(ddof=1) if len(logits) > 1 else 1.0
        fitted = logits.mean() + norm.ppf(1 - false_alarm) * spread
        return float(max(self.holdout_scores.max(), 1 / (1 + math.exp(-fitted))))

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "model": "U-Net on simulated defects (DRAEM discriminative)",
            "working_size": [self.size[0], self.size[1]],
            "image_size": self.config.image_size,
            "features": "pixels + builtin filter bank" if self.config.features else "pixels",
            "weights_sha256": weights_digest(self.model),
            "holdout": len(self.holdout_scores),
            "steps": self.config.steps,
        }

    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        tensors = {k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": str(FORMAT_VERSION)})
        write_json(out_dir / CONFIG_FILE, {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "working_size": list(self.size),
            "weights_sha256": weights_digest(self.model),
            **{k: v for k, v in self.record.items() if k not in ("format", "config", "working_size", "weights_sha256")},
        })

    @classmethod
    def load(cls, out_dir: str | Path) -> LearnedScorer:
        out_dir = Path(out_dir)
        try:
            record = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AnomalyVLMError(f"{out_dir / CONFIG_FILE}: no readable learned model ({exc}); run learn_product first") from None
        if record.get("format") != FORMAT_VERSION:
            raise AnomalyVLMError(f"{out_dir / CONFIG_FILE}: format {record.get('format')}, this version reads {FORMAT_VERSION}")
        config = LearnConfig.from_dict(record["config"])
        model = LearnedSegmenter(config.width, config.levels, config.features, config.image_size)
        model.load_state_dict(load_file(str(out_dir / WEIGHTS_FILE)))
        return cls(model, config, tuple(record["working_size"]), record)


# Training --------------------------------------------------------------------------


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


def learn_product(
    good_images: list[Image.Image],
    out_dir: str | Path,
    config: LearnConfig | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> LearnedScorer:
    """Train on `good_images` (some held out), save `learned.safetensors` + `learned.json` in `out_dir`.

    Resumes from `out_dir/checkpoint/` when it holds a checkpoint of the same run.
    `callback(step, loss)` is called after every step (a test raises from it to
    simulate a kill).
    """
    config = config or LearnConfig()
    if len(good_images) < 2:
        raise AnomalyVLMError("learn_product needs at least two good images")
    out_dir = Path(out_dir)
    folder = out_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    size = working_size(good_images, config.image_size)
    arrays = [to_array(im, size) for im in good_images]
    train_ids, held_ids = _split(len(arrays), config)
    train, held = [arrays[i] for i in train_ids], [arrays[i] for i in held_ids]
    sampler = DefectSampler(train, config)

    torch.manual_seed(config.seed)
    model = LearnedSegmenter(config.width, config.levels, config.features, config.image_size)
    with torch.no_grad():
        inputs = model.inputs(to_tensor(train))
        model.in_mean.copy_(inputs.mean(dim=(0, 2, 3), keepdim=True))
        model.in_std.copy_(inputs.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-4))
        del inputs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    identity = _identity(config)
    record = {"identity": identity, "losses": [], "seconds": 0.0}
    resumed = _load_state(folder, identity, model, optimizer)
    start = 0
    if resumed is not None:
        record, start = resumed, resumed["step"]
    model.train()
    began, seconds_before = time.perf_counter(), float(record.get("seconds", 0.0))
    bar = tqdm(total=config.steps, initial=start, desc="learning product", unit="step", disable=not progress)
    for step in range(start, config.steps):
        images, masks = sampler.batch(step, config.seed, config.batch_size)
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
            _save_state(folder, done, model, optimizer, record)
        if callback is not None:
            callback(step, loss)
    bar.close()
    record["seconds"] = seconds_before + time.perf_counter() - began if start < config.steps else record["seconds"]

    scorer = LearnedScorer(model.eval(), config, size)
    holdout_scores = scorer.finish(scorer.predict_maps(to_tensor(held)))[1].tolist() if held else []
    scorer.holdout_scores = np.asarray(holdout_scores)
    scorer.record = {
        "holdout_indices": held_ids,
        "holdout_scores": holdout_scores,
        "train_seconds": record["seconds"],
        "losses_every_10": record["losses"][::10],
        "validation": validate(scorer, held, config),
    }
    scorer.save(out_dir)
    return scorer

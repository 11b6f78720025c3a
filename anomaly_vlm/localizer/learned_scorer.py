"""The learned localizer's network and scorer: a U-Net from pixels to one defect logit per pixel.

The network is DRAEM's discriminative half, trained on simulated defects (learned.py).
Being fully convolutional, it scores the whole aspect-kept working image and gives a
map at that size. The scorer saves and loads it as `learned.safetensors` (the
weights) beside `learned.json` (its config, working size and training record);
nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from ..digests import tensors_digest
from ..errors import AnomalyVLMError
from ..files import atomic_path, write_json
from .features import BuiltinFeatureConfig, BuiltinFeatures
from .learned_config import LearnConfig
from .scorer import Prediction, smooth
from .simulated_defects import to_array, to_tensor

FORMAT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE = "learned.safetensors", "learned.json"


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


class LearnedEnsemble(nn.Module):
    """Networks trained with different seeds, as one: the logit of their mean defect probability."""

    def __init__(self, members: list[LearnedSegmenter]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probability = torch.stack([torch.sigmoid(member(images)) for member in self.members]).mean(dim=0)
        return torch.logit(probability, eps=1e-7)


def weights_digest(model: nn.Module) -> str:
    """The digest of the model's state (equal digests, equal weights), as every other model is digested."""
    return tensors_digest(model.state_dict())


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

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "model": "U-Net on simulated defects (DRAEM discriminative)",
            "working_size": [self.size[0], self.size[1]],
            "image_size": self.config.image_size,
            "features": "pixels + builtin filter bank" if self.config.features else "pixels",
            "members": self.config.members,
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
        members = [LearnedSegmenter(config.width, config.levels, config.features, config.image_size)
                   for _ in range(config.members)]
        model = members[0] if len(members) == 1 else LearnedEnsemble(members)
        model.load_state_dict(load_file(str(out_dir / WEIGHTS_FILE)))
        return cls(model, config, tuple(record["working_size"]), record)

"""The localizer: frozen CLIP + state text -> anomaly maps and image scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..clip import ClipBackbone, VisualFeatures, default_taps, encode_image_dense
from .config import LocalizerConfig
from .prompt_learner import ABNORMAL, NORMAL, PromptLearner, StateText
from .scorer import Prediction, smooth
from .tiling import stitch, tiles, working_size


@dataclass
class LocalizerOutput:
    """Differentiable outputs: per-layer state probabilities (B, 2, S, S) and global logits (B, 2)."""

    layer_probs: list[torch.Tensor]
    global_logits: torch.Tensor

    def layer_maps(self) -> list[torch.Tensor]:
        """(P_abnormal + 1 - P_normal) / 2 per layer: (B, S, S) each, in 0..1."""
        return [(p[:, ABNORMAL] + 1 - p[:, NORMAL]) / 2 for p in self.layer_probs]


class Localizer(nn.Module):
    """Zero-shot anomaly localizer (AnomalyCLIP semantics; see DESIGN.md).

    Maps are averaged over the tapped layers so they stay in 0..1; AnomalyCLIP sums
    them, which is the same map times the number of layers.
    """

    batch_size = 8
    """Images per forward pass in `score`."""

    def __init__(self, backbone: ClipBackbone, text: StateText, config: LocalizerConfig = LocalizerConfig()):
        super().__init__()
        self.backbone = backbone
        self.text = text
        self.config = config
        self.mode = "prompt" if isinstance(text, PromptLearner) else "ensemble"
        self.layers = tuple(config.layers) if config.layers else default_taps(backbone.vision_depth)
        if config.surgery:
            self.surgery_start = config.surgery_start or default_taps(backbone.vision_depth)[0]
        else:
            self.surgery_start = None
        self._text_cache: dict[str | None, torch.Tensor] = {}

    def text_features(self, object_name: str | None = None) -> torch.Tensor:
        """(2, D) normal/abnormal features; cached unless they can still change (training)."""
        trainable = isinstance(self.text, nn.Module) and any(p.requires_grad for p in self.text.parameters())
        if trainable and torch.is_grad_enabled():
            self._text_cache.clear()
            return self.text.text_features(self.backbone, object_name)
        if object_name not in self._text_cache:
            with torch.no_grad():
                self._text_cache[object_name] = self.text.text_features(self.backbone, object_name)
        return self._text_cache[object_name]

    def clear_text_cache(self) -> None:
        """Forget cached text features (after the prompts changed)."""
        self._text_cache.clear()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> VisualFeatures:
        """Image features; the backbone is frozen, so no graph is ever kept for them."""
        images = images.to(self.backbone.device, self.backbone.dtype)
        return encode_image_dense(
            self.backbone.model.visual, images, self.layers, self.surgery_start, global_ln_post=not self.config.compat
        )

    def forward(self, images: torch.Tensor, object_name: str | None = None) -> LocalizerOutput:
        features = self.encode(images)
        text = self.text_features(object_name).to(features.global_feature.dtype)
        grid, size = self.backbone.grid_size, self.backbone.image_size
        layer_probs = []
        for tokens in features.patch_tokens:
            probs = (tokens @ text.T / self.config.temperature).softmax(dim=-1)
            probs = probs.reshape(-1, grid, grid, 2).permute(0, 3, 1, 2)
            layer_probs.append(F.interpolate(probs.float(), size=(size, size), mode="bilinear", align_corners=False))
        global_logits = features.global_feature @ text.T / self.config.temperature
        return LocalizerOutput(layer_probs, global_logits.float())

    @torch.no_grad()
    def _raw(self, images: torch.Tensor, object_name: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unsmoothed maps (B, H, W) and global abnormal probabilities (B,); non-square images go by square tiles."""
        side, patch = self.backbone.image_size, self.backbone.patch_size
        size = tuple(images.shape[-2:])
        if size == (side, side):
            output = self(images, object_name)
            return torch.stack(output.layer_maps()).mean(dim=0).float().cpu(), output.global_logits.softmax(dim=-1)[:, ABNORMAL].cpu()
        corners = tiles(size, side, patch)
        maps, globals_ = zip(*(self._raw(images[..., top : top + side, left : left + side], object_name) for top, left in corners))
        return stitch([m.unsqueeze(1) for m in maps], corners, size)[:, 0], torch.stack(globals_).amax(dim=0)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, object_name: str | None = None) -> Prediction:
        """Maps and scores of preprocessed images; a tiled image's global score is its most abnormal tile's."""
        raw, global_score = self._raw(images, object_name)
        anomaly_map = smooth(raw.numpy().astype(np.float32), self.config.sigma)
        global_score = global_score.numpy()
        max_score = anomaly_map.reshape(len(anomaly_map), -1).max(axis=1)
        image_score = {
            "global": global_score,
            "max": max_score,
            "blend": (global_score + max_score) / 2,
        }[self.config.image_score]
        return Prediction(anomaly_map, image_score, {"global": global_score, "max": max_score}, (self.mode,))

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        """`predict` over a list of images, `batch_size` at a time."""
        size = working_size(images, self.backbone.image_size, self.backbone.patch_size, self.config.keep_aspect)
        parts = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.backbone.preprocess(image, size) for image in images[start : start + self.batch_size]])
            parts.append(self.predict(batch, object_name))
        return Prediction.concat(parts)

    def describe(self) -> dict:
        """Which models and settings produced the outputs (recorded in every result)."""
        return {
            "mode": self.mode,
            **self.backbone.describe(),
            "prompts": self.text.describe(),
            "prompts_digest": self.text.digest(),
            "layers": list(self.layers),
            "surgery_start": self.surgery_start,
            "image_score": self.config.image_score,
            "compat": self.config.compat,
            "keep_aspect": self.config.keep_aspect,
        }

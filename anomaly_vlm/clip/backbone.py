"""A frozen open_clip model prepared for dense anomaly scoring at any input size."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..digests import file_digest
from ..errors import UnsupportedModelError, WeightsNotFoundError
from .weights import ResolvedWeights, resolve_weights

TINY_MODEL = "anomaly-vlm-tiny"
open_clip.add_model_config(Path(__file__).parent / "configs")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BackboneConfig:
    """Which CLIP to load, and how."""

    name: str = field(default="ViT-L-14-336", metadata={"help": "open_clip architecture, hf-hub:ORG/REPO or local-dir:PATH"})
    weights: str | None = field(default="openai", metadata={"help": "pretrained tag, checkpoint file/folder, or 'none'"})
    image_size: int | None = field(default=518, metadata={"help": "CLIP input side in pixels; None keeps the native size"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', ..."})
    precision: str = field(default="fp32", metadata={"help": "fp32, bf16 or fp16 (half precision on GPU only)"})
    quick_gelu: bool | None = field(default=None, metadata={"help": "force QuickGELU; None follows the weights"})
    cache_dir: str | None = field(default=None, metadata={"help": "hub cache folder"})


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ClipBackbone(nn.Module):
    """open_clip CLIP with its patch grid resized to `image_size`, frozen, plus its tokenizer.

    The positional embeddings are resized once, bilinearly with `align_corners=False`
    (class position untouched), which is what AnomalyCLIP's released prompts expect;
    open_clip's own resize is bicubic and gives different numbers.
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, source: str, image_size: int | None = None,
                 weights_digest: str | None = None):
        super().__init__()
        if not hasattr(model, "visual") or not hasattr(model, "token_embedding"):
            raise UnsupportedModelError(f"{name}: only open_clip CLIP models with a built-in text tower are supported")
        visual = model.visual
        if not hasattr(visual, "conv1") or getattr(visual, "attn_pool", None) is not None:
            raise UnsupportedModelError(f"{name}: the localizer needs a plain ViT image tower (no attention pooling)")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.weights_digest = weights_digest or source
        self.patch_size = visual.patch_size[0]
        # The patch grid must tile the input exactly: round to the nearest multiple (518 -> 512 for /16).
        requested = image_size or visual.image_size[0]
        self.image_size = self.patch_size * max(1, round(requested / self.patch_size))
        if self.image_size != visual.image_size[0]:
            self._resize_positional_embedding(self.image_size // self.patch_size)
        preprocess = getattr(visual, "preprocess_cfg", {})
        self.register_buffer("mean", torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD)).view(3, 1, 1), persistent=False)

    def _resize_positional_embedding(self, grid: int) -> None:
        visual = self.model.visual
        pos = visual.positional_embedding.data
        old = int(round((pos.shape[0] - 1) ** 0.5))
        patches = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
        patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(pos.dtype)
        visual.positional_embedding = nn.Parameter(torch.cat([pos[:1], patches]), requires_grad=False)
        visual.image_size = (self.image_size, self.image_size)
        visual.grid_size = (grid, grid)

    @property
    def device(self) -> torch.device:
        return self.model.visual.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def vision_depth(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    @property
    def text_depth(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def text_width(self) -> int:
        return self.model.token_embedding.weight.shape[1]

    def preprocess(self, image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Resize straight to `size` = (height, width), S x S by default (bicubic), and normalize: (3, H, W)."""
        height, width = size or (self.image_size, self.image_size)
        resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
        tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (tensor - self.mean.cpu()) / self.std.cpu()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    def describe(self) -> dict:
        return {"backbone": self.name, "weights": self.source, "weights_digest": self.weights_digest,
                "image_size": self.image_size}


def load_backbone(config: BackboneConfig) -> ClipBackbone:
    """Build the backbone, resolving weights locally first (see `weights.resolve_weights`)."""
    resolved: ResolvedWeights = resolve_weights(config.name, config.weights, config.cache_dir, config.quick_gelu)
    device = resolve_device(config.device)
    if config.precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(_DTYPES)}, not {config.precision!r}")
    try:
        model = open_clip.create_model(
            resolved.model_name,
            pretrained=resolved.checkpoint,
            force_quick_gelu=resolved.quick_gelu,
            cache_dir=config.cache_dir,
            weights_only=True,
        )
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsNotFoundError(
            f"Could not load CLIP {config.name} from {resolved.source}: {reason}\n"
            "Weights must be a safetensors file or a plain state dict (pickled code is refused); "
            "the safetensors release of the OpenAI weights is 'open_clip_model.safetensors' in hub "
            "repo timm/vit_large_patch14_clip_336.openai."
        ) from None
    tokenizer = open_clip.get_tokenizer(resolved.model_name)
    digest = file_digest(resolved.checkpoint) if resolved.checkpoint and Path(resolved.checkpoint).is_file() else None
    backbone = ClipBackbone(model, tokenizer, config.name, resolved.source, config.image_size, digest)
    return backbone.to(device=device, dtype=_DTYPES[config.precision])

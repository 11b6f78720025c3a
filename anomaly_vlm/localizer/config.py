"""Typed configs of the localizer and its learned prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ImageScore = Literal["global", "max", "blend"]


@dataclass
class PromptConfig:
    """Object-agnostic learnable prompts (AnomalyCLIP): two states, deep text prompts."""

    context_length: int = field(default=12, metadata={"help": "learnable context vectors per state"})
    deep_depth: int = field(default=9, metadata={"help": "deep prompts go into text layers 2..deep_depth"})
    deep_length: int = field(default=4, metadata={"help": "tokens replaced by each deep prompt"})
    init_std: float = field(default=0.02, metadata={"help": "std of the N(0, std) initialization"})

    @property
    def num_deep_prompts(self) -> int:
        return max(self.deep_depth - 1, 0)


@dataclass
class LocalizerConfig:
    """How maps and scores are computed from CLIP features."""

    layers: tuple[int, ...] | None = field(default=None, metadata={"help": "1-based tapped blocks; None: quarter points"})
    surgery_start: int | None = field(default=None, metadata={"help": "first V-V surgery block; None: first quarter point"})
    surgery: bool = field(default=True, metadata={"help": "use V-V attention surgery for the taps"})
    temperature: float = field(default=0.07, metadata={"help": "softmax temperature of cosine similarities"})
    sigma: float = field(default=4.0, metadata={"help": "Gaussian smoothing of the final map, in pixels"})
    image_score: ImageScore = field(default="global", metadata={"help": "global (CLS), max (map maximum) or blend"})
    compat: bool = field(default=False, metadata={"help": "reproduce AnomalyCLIP's reference numerics exactly"})
    keep_aspect: bool = field(default=True, metadata={"help": "keep the set's aspect ratio, scoring square tiles, instead of squashing to a square"})

"""Text-side state descriptions: learned (AnomalyCLIP) or hand-crafted (WinCLIP-style ensemble)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..clip import ClipBackbone, encode_text_prompted
from ..digests import json_digest, tensors_digest
from ..templates import StateWords
from .config import PromptConfig

NORMAL, ABNORMAL = 0, 1


class StateText(Protocol):
    """Anything that yields the (normal, abnormal) text features for a backbone."""

    def text_features(self, backbone: ClipBackbone, object_name: str | None = None) -> torch.Tensor: ...

    def describe(self) -> str: ...

    def digest(self) -> str:
        """A content digest of what the text side holds: two checkpoints never share records."""
        ...


class PromptLearner(nn.Module):
    """12 context vectors per state + deep prompts; the only trainable parameters.

    The templates are object-agnostic ("[V] object." / "[W] damaged object."), so one
    set of prompts serves every product category; `object_name` is ignored.
    """

    def __init__(self, width: int, config: PromptConfig = PromptConfig(), deep_prompts_fp16: bool = False):
        super().__init__()
        self.config = config
        self.deep_prompts_fp16 = deep_prompts_fp16
        n, std = config.context_length, config.init_std
        self.normal_context = nn.Parameter(torch.randn(n, width) * std)
        self.abnormal_context = nn.Parameter(torch.randn(n, width) * std)
        self.deep_prompts = nn.ParameterList(
            nn.Parameter(torch.randn(config.deep_length, width) * std) for _ in range(config.num_deep_prompts)
        )

    @property
    def width(self) -> int:
        return self.normal_context.shape[1]

    def templates(self) -> list[str]:
        slots = " ".join(["X"] * self.config.context_length)
        return [f"{slots} object.", f"{slots} damaged object."]

    def text_features(self, backbone: ClipBackbone, object_name: str | None = None) -> torch.Tensor:
        if backbone.text_width != self.width:
            raise ValueError(f"prompts of width {self.width} do not fit {backbone.name} (text width {backbone.text_width})")
        tokens = backbone.tokenize(self.templates())
        context = torch.stack([self.normal_context, self.abnormal_context])
        return encode_text_prompted(backbone.model, tokens, context, list(self.deep_prompts), self.deep_prompts_fp16)

    def describe(self) -> str:
        return "learned object-agnostic prompts"

    def digest(self) -> str:
        return tensors_digest(dict(self.named_parameters()))


class PromptEnsemble:
    """States x templates averaged per state: zero-shot, nothing to train."""

    def __init__(self, prompts: StateWords | None = None):
        self.prompts = prompts or StateWords.load()

    def sentences(self, object_name: str) -> tuple[list[str], list[str]]:
        def expand(states: tuple[str, ...]) -> list[str]:
            return [t.format(s.format(object_name)) for s in states for t in self.prompts.templates]

        return expand(self.prompts.normal_states), expand(self.prompts.abnormal_states)

    @torch.no_grad()
    def text_features(self, backbone: ClipBackbone, object_name: str | None = None) -> torch.Tensor:
        features = []
        for sentences in self.sentences((object_name or "object").replace("_", " ")):
            encoded = encode_text_prompted(backbone.model, backbone.tokenize(sentences))
            features.append(torch.nn.functional.normalize(encoded.mean(dim=0), dim=-1))
        return torch.stack(features)

    def describe(self) -> str:
        return "hand-crafted prompt ensemble"

    def digest(self) -> str:
        return json_digest([self.prompts.normal_states, self.prompts.abnormal_states, self.prompts.templates])

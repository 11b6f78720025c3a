"""CLIP text encoding with learnable context vectors and deep prompts (AnomalyCLIP style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def encode_text_prompted(
    model: nn.Module,
    tokens: torch.Tensor,
    context: torch.Tensor | None = None,
    deep_prompts: list[torch.Tensor] | tuple[torch.Tensor, ...] = (),
    deep_prompts_fp16: bool = False,
) -> torch.Tensor:
    """L2-normalized text features (P, D) for `tokens` (P, L).

    `context` (P, n, W) replaces the token embeddings at positions 1..n (the "X"
    slots). `deep_prompts[j]` (m, W) replaces positions 1..m at the input of
    text layer j + 2 (1-based), never of layer 1. `deep_prompts_fp16` rounds them
    through fp16 as AnomalyCLIP's reference code does.
    """
    x = model.token_embedding(tokens)
    if context is not None:
        n = context.shape[1]
        x = torch.cat([x[:, :1], context.to(x.dtype), x[:, 1 + n :]], dim=1)
    x = x + model.positional_embedding.to(x.dtype)
    batch_first = getattr(model.transformer, "batch_first", True)
    blocks = model.transformer.resblocks
    if len(deep_prompts) >= len(blocks):
        raise ValueError(f"{len(deep_prompts)} deep prompts need more than the {len(blocks)} text layers")
    for index, block in enumerate(blocks):
        if 1 <= index <= len(deep_prompts):
            prompt = deep_prompts[index - 1]
            if deep_prompts_fp16:
                prompt = prompt.half()
            prompt = prompt.to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], prompt, x[:, 1 + prompt.shape[1] :]], dim=1)
        if batch_first:
            x = block(x, attn_mask=model.attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=model.attn_mask).transpose(0, 1)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = model.text_projection
    x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x, dim=-1)

"""Patch-token taps and the V-V attention surgery (DPAM) on an open_clip ViT.

The ordinary residual stream `h` runs exactly as CLIP does. From `surgery_start`
on, a second stream `s` starts from that block's input and, in every later block,
adds V-V self-attention (q = k = v = the value projection of ln_1(h)) with the
block's output projection; `s` skips the MLP. V-V attention makes each patch attend
to patches with similar content instead of to a few global "register" tokens, which
is what gives CLIP usable local features. Taps inside the surgery range read `s`.
Both attentions share one QKV projection and run in one fused SDPA call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError


@dataclass
class VisualFeatures:
    """Projected, L2-normalized features: `patch_tokens[i]` is (B, N, D) for tap i; `global_feature` (B, D)."""

    patch_tokens: list[torch.Tensor]
    global_feature: torch.Tensor


def default_taps(depth: int) -> tuple[int, ...]:
    """Quarter points of the depth (6, 12, 18, 24 for ViT-L), 1-based."""
    return tuple(sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)}))


def _check_block(block: nn.Module) -> nn.MultiheadAttention:
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None or hasattr(block, "ln_1_kv"):
        raise UnsupportedModelError(
            f"{type(block).__name__}: the V-V surgery needs standard CLIP blocks with fused QKV attention"
        )
    return attn


def run_block(block: nn.Module, h: torch.Tensor, value_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One CLIP residual block on batch-first `h`; with `value_attention`, also its V-V branch."""
    attn = _check_block(block)
    batch, tokens, width = h.shape
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(h), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if value_attention:
        q, k, v = torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v])
    out = F.scaled_dot_product_attention(q, k, v)
    out = attn.out_proj(out.transpose(1, 2).reshape(-1, tokens, width))
    out = block.ls_1(out)
    vv = None
    if value_attention:
        out, vv = out[:batch], out[batch:]
    h = h + out
    h = h + block.ls_2(block.mlp(block.ln_2(h)))
    return h, vv


def embed_patches(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token + positional embedding + ln_pre: (B, 1 + N, W)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


def encode_image_dense(
    visual: nn.Module,
    images: torch.Tensor,
    taps: tuple[int, ...],
    surgery_start: int | None,
    global_ln_post: bool = True,
    project: bool = True,
) -> VisualFeatures:
    """Run the image tower once, returning tapped patch features and the global feature.

    `taps` and `surgery_start` are 1-based block indices; `surgery_start=None` disables
    the surgery. `global_ln_post=False` reproduces AnomalyCLIP's global feature, which
    skips `ln_post` on the class token. `project=False` returns the tapped tokens in the
    tower's own width, layer-normalized without affine weights: the features that
    patch-to-patch comparison (mutual and reference scoring) works best on.
    """
    blocks = visual.transformer.resblocks
    if not taps or min(taps) < 1 or max(taps) > len(blocks):
        raise ValueError(f"taps {taps} must be 1-based block indices within 1..{len(blocks)}")
    h = embed_patches(visual, images)
    s = None
    tapped: dict[int, torch.Tensor] = {}
    for index, block in enumerate(blocks, start=1):
        surgery = surgery_start is not None and index >= surgery_start
        if surgery and s is None:
            s = h
        h, vv = run_block(block, h, value_attention=surgery)
        if vv is not None:
            s = s + vv
        if index in taps:
            tapped[index] = s if surgery else h
    if project:
        patch_tokens = [F.normalize(visual.ln_post(tapped[i][:, 1:]) @ visual.proj, dim=-1) for i in taps]
    else:
        patch_tokens = [F.normalize(F.layer_norm(tapped[i][:, 1:], tapped[i].shape[-1:]), dim=-1) for i in taps]
    cls = h[:, 0]
    if global_ln_post:
        cls = visual.ln_post(cls)
    return VisualFeatures(patch_tokens, F.normalize(cls @ visual.proj, dim=-1))

"""An independent, deliberately plain re-computation of AnomalyCLIP's forward pass.

Written from the published semantics (DESIGN.md) with explicit per-head loops and
the reference's dual-path block structure, to check the fused implementation in
`anomaly_vlm.clip` against. Slow by design; only for tiny test models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


def _attention(block, x, value_value: bool):
    attn = block.attn
    w, b = attn.in_proj_weight, attn.in_proj_bias
    width = x.shape[-1]
    q = x @ w[:width].T + b[:width]
    k = x @ w[width : 2 * width].T + b[width : 2 * width]
    v = x @ w[2 * width :].T + b[2 * width :]
    heads, head_dim = attn.num_heads, width // attn.num_heads
    outputs = []
    for h in range(heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        qh, kh, vh = (v[..., sl], v[..., sl], v[..., sl]) if value_value else (q[..., sl], k[..., sl], v[..., sl])
        weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        outputs.append(weights @ vh)
    return attn.out_proj(torch.cat(outputs, dim=-1))


def reference_visual(visual, images, taps, surgery_start):
    """Returns (patch features per tap, CLS feature without ln_post) as the reference does."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(x)
    state = x
    tokens = []
    for index, block in enumerate(visual.transformer.resblocks, start=1):
        if index < surgery_start:
            state = state + _attention(block, block.ln_1(state), False)
            state = state + block.mlp(block.ln_2(state))
            ordinary = state
        else:
            if not isinstance(state, list):
                state = [state, state]
            new, ordinary = state
            normed = block.ln_1(ordinary)
            new = new + _attention(block, normed, True)
            ordinary = ordinary + _attention(block, normed, False)
            ordinary = ordinary + block.mlp(block.ln_2(ordinary))
            state = [new, ordinary]
        if index in taps:
            tokens.append(state[0] if isinstance(state, list) else state)
    patch = [F.normalize(visual.ln_post(t[:, 1:]) @ visual.proj, dim=-1) for t in tokens]
    cls = F.normalize(ordinary[:, 0] @ visual.proj, dim=-1)
    return patch, cls


def reference_text(model, tokens, ctx, deep):
    x = model.token_embedding(tokens)
    n = ctx.shape[1]
    x = torch.cat([x[:, :1], ctx, x[:, 1 + n :]], 1) + model.positional_embedding
    for index, block in enumerate(model.transformer.resblocks):
        if 1 <= index <= len(deep):
            d = deep[index - 1].half().float().unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], d, x[:, 1 + d.shape[1] :]], 1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)[torch.arange(x.shape[0]), tokens.argmax(-1)] @ model.text_projection
    return F.normalize(x, dim=-1)


def reference_maps(patch_features, cls, text, image_size, sigma=4.0):
    """Summed layer maps (smoothed) and the CLS abnormal probability, as the reference computes them."""
    total = 0
    for feats in patch_features:
        sim = (feats @ text.T / 0.07).softmax(-1)
        side = int(math.isqrt(sim.shape[1]))
        sim = sim.reshape(sim.shape[0], side, side, 2).permute(0, 3, 1, 2)
        sim = F.interpolate(sim, image_size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        total = total + (sim[..., 1] + 1 - sim[..., 0]) / 2.0
    smoothed = np.stack([gaussian_filter(m, sigma=sigma) for m in total.detach().numpy()])
    score = (cls @ text.T / 0.07).softmax(-1)[:, 1]
    return smoothed, score.detach().numpy()

"""Nearest-neighbour distances between patch features, computed in bounded chunks.

Mutual and reference scoring both reduce to "how far is each patch from its closest
patch elsewhere"; these helpers do that with matrix products over chunks, so memory
is set by the chunk size and not by the number of images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def neighbourhood_average(features: torch.Tensor, size: int) -> torch.Tensor:
    """Average each patch with its `size` x `size` neighbourhood: (B, C, h, w) -> same shape.

    Larger neighbourhoods describe larger structures, so a defect spanning several
    patches stands out at the size that matches it.
    """
    if size <= 1:
        return features
    return F.avg_pool2d(features, size, stride=1, padding=size // 2, count_include_pad=False)


def as_patches(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return features.flatten(2).transpose(1, 2)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=-1)


def nearest_distance(query: torch.Tensor, bank: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Euclidean distance from each query row (N, C) to its nearest bank row (M, C): (N,).

    Both sides go `chunk` rows at a time: the largest block held is chunk x chunk.
    """
    bank_norms = _squared_norms(bank)
    parts = []
    for q in range(0, len(query), chunk):
        rows = query[q : q + chunk]
        best = torch.full((len(rows),), float("inf"), dtype=query.dtype)
        for b in range(0, len(bank), chunk):
            d = torch.addmm(bank_norms[b : b + chunk].unsqueeze(0), rows, bank[b : b + chunk].T, alpha=-2)
            best = torch.minimum(best, d.amin(dim=1))
        parts.append((best + _squared_norms(rows)).clamp_min(0).sqrt())
    return torch.cat(parts)


def nearest_distance_per_image(query: torch.Tensor, others: torch.Tensor, chunk_images: int = 16) -> torch.Tensor:
    """Distance from each query patch (N, C) to its nearest patch in each other image (B, M, C): (N, B).

    Works `chunk_images` images at a time: the largest block held is N x chunk_images x M.
    """
    query_norms = _squared_norms(query).unsqueeze(1)
    columns = []
    for start in range(0, len(others), chunk_images):
        block = others[start : start + chunk_images]
        images, patches, channels = block.shape
        flat = block.reshape(-1, channels)
        d = torch.addmm(_squared_norms(flat).unsqueeze(0), query, flat.T, alpha=-2)
        columns.append(d.view(len(query), images, patches).amin(dim=2))
    return (torch.cat(columns, dim=1) + query_norms).clamp_min(0).sqrt()


def greedy_coreset(bank: torch.Tensor, size: int, projection_dim: int = 24, seed: int = 0,
                   oversample: int = 10) -> torch.Tensor:
    """Indices of `size` rows chosen by greedy k-centre (PatchCore's coreset).

    Each pick is the row farthest from everything picked so far, so the subset covers
    the bank's spread, not just its dense middle. Distances are taken on a fixed random
    projection when the features are wide, which keeps each step cheap. The cost is
    rows x picks, so a bank over `oversample` times `size` is first cut to a seeded
    random pool of that many rows: a product with hundreds of good images is fitted
    in minutes, not hours.
    """
    if size >= len(bank):
        return torch.arange(len(bank))
    generator = torch.Generator().manual_seed(seed)
    if len(bank) > oversample * size:
        pool = torch.randperm(len(bank), generator=generator)[: oversample * size].sort().values
        return pool[greedy_coreset(bank[pool], size, projection_dim, seed, oversample)]
    points = bank
    if bank.shape[1] > projection_dim:
        projection = torch.randn(bank.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        points = bank @ projection.to(bank.dtype)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(points), (1,), generator=generator))
    distance = (points - points[chosen[0]]).square().sum(dim=1)
    for i in range(1, size):
        chosen[i] = int(distance.argmax())
        distance = torch.minimum(distance, (points - points[chosen[i]]).square().sum(dim=1))
    return chosen

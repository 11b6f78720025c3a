"""Segmentation and classification losses for prompt learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .prompt_learner import ABNORMAL, NORMAL


def focal_loss(probs: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """Focal loss on two-state probabilities (B, 2, H, W) against a binary mask (B, H, W).

    Defects cover a few percent of pixels; the (1 - p)^gamma factor keeps the easy
    normal pixels from drowning them out.
    """
    p_true = torch.where(mask > 0.5, probs[:, ABNORMAL], probs[:, NORMAL]).clamp(eps, 1.0)
    return (-((1 - p_true) ** gamma) * p_true.log()).mean()


def dice_loss(prediction: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice overlap over the whole batch; `smooth` keeps empty masks finite."""
    intersection = (prediction * target).sum()
    return 1 - (2 * intersection + smooth) / (prediction.sum() + target.sum() + smooth)


def segmentation_loss(layer_probs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Sum over tapped layers of focal + dice(abnormal, mask) + dice(normal, 1 - mask)."""
    total = mask.new_zeros(())
    for probs in layer_probs:
        total = total + focal_loss(probs, mask)
        total = total + dice_loss(probs[:, ABNORMAL], mask) + dice_loss(probs[:, NORMAL], 1 - mask)
    return total


def image_loss(global_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(global_logits, labels.long())

"""Training loss: VSE++ hinge-based triplet ranking loss (Faghri et al., 2018) on SHAN's scores."""

from __future__ import annotations

import torch
from torch import nn


class ContrastiveLoss(nn.Module):
    """Hinge triplet loss in both directions; the diagonal of ``scores`` holds the positives.

    For a ``(B, B)`` score matrix ``S`` (rows: images, columns: captions, ``S[i, i]`` matching):

    * caption retrieval (image anchor): ``[margin + S[i, c] - S[i, i]]_+`` over ``c != i``;
    * image retrieval (caption anchor): ``[margin + S[j, c] - S[c, c]]_+`` over ``j != c``.

    With ``max_violation`` only the hardest negative of each anchor counts (VSE++), otherwise all
    negatives are summed. The result is the sum over the batch (as in VSE++/SCAN).
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = True) -> None:
        super().__init__()
        self.margin = float(margin)
        self.max_violation = bool(max_violation)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores (B, B)`` -> scalar loss."""
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"scores must be a square (B, B) matrix, got {tuple(scores.shape)}")
        diagonal = scores.diagonal().view(-1, 1)
        cost_c = (self.margin + scores - diagonal).clamp(min=0)  # image anchor, row-wise
        cost_i = (self.margin + scores - diagonal.t()).clamp(min=0)  # caption anchor, column-wise
        eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        cost_c = cost_c.masked_fill(eye, 0.0)
        cost_i = cost_i.masked_fill(eye, 0.0)
        if self.max_violation:
            return cost_c.max(1).values.sum() + cost_i.max(0).values.sum()
        return cost_c.sum() + cost_i.sum()


__all__ = ["ContrastiveLoss"]

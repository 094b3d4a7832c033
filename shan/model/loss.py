"""Training loss: VSE++ hinge-based triplet ranking loss (Faghri et al., 2018) on SHAN's scores,
and **[beyond the paper]** a hinge of each matching pair against its own hard-negative captions."""

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

    **[beyond the paper]** ``neg_scores (B, K)`` — image ``i`` against ``K`` false captions made
    from its own caption (typed or word-swap negatives) — add
    ``hard_negative_weight * sum_i [margin + S(i, neg_ik) - S[i, i]]_+`` (the hardest ``k`` with
    ``max_violation``, all ``k`` otherwise; entries where ``neg_mask (B, K)`` is False do not
    count). They form a term of their own instead of joining the in-batch pool: in the pool the
    hardest violator of an image would almost always be its own minimal pair, and the other
    images' captions — what retrieval ranks against — would stop being trained.
    """

    def __init__(
        self, margin: float = 0.2, max_violation: bool = True, hard_negative_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.margin = float(margin)
        self.max_violation = bool(max_violation)
        self.hard_negative_weight = float(hard_negative_weight)

    def forward(
        self,
        scores: torch.Tensor,
        neg_scores: torch.Tensor | None = None,
        neg_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``scores (B, B)``, optional ``neg_scores (B, K)`` and ``neg_mask (B, K)`` bool ->
        scalar loss."""
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"scores must be a square (B, B) matrix, got {tuple(scores.shape)}")
        diagonal = scores.diagonal().view(-1, 1)
        cost_c = (self.margin + scores - diagonal).clamp(min=0)  # image anchor, row-wise
        cost_i = (self.margin + scores - diagonal.t()).clamp(min=0)  # caption anchor, column-wise
        eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        cost_c = cost_c.masked_fill(eye, 0.0)
        cost_i = cost_i.masked_fill(eye, 0.0)
        if self.max_violation:
            loss = cost_c.max(1).values.sum() + cost_i.max(0).values.sum()
        else:
            loss = cost_c.sum() + cost_i.sum()
        if neg_scores is not None:
            loss = loss + self.hard_negative_weight * self.negative_hinge(
                diagonal.view(-1), neg_scores, neg_mask
            )
        return loss

    def negative_hinge(
        self,
        positives: torch.Tensor,
        neg_scores: torch.Tensor,
        neg_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sum_i [margin + neg_scores[i, k] - positives[i]]_+`` over valid ``k`` (the largest
        per ``i`` with ``max_violation``). ``positives (B,)``, ``neg_scores (B, K)``,
        ``neg_mask (B, K)`` bool or None (all valid)."""
        if neg_scores.dim() != 2 or neg_scores.shape[0] != positives.shape[0]:
            raise ValueError(
                f"neg_scores must be (B, K) with B = {positives.shape[0]}, "
                f"got {tuple(neg_scores.shape)}"
            )
        cost = (self.margin + neg_scores - positives.view(-1, 1)).clamp(min=0)
        if neg_mask is not None:
            if neg_mask.shape != neg_scores.shape:
                raise ValueError(
                    f"neg_mask {tuple(neg_mask.shape)} does not match neg_scores "
                    f"{tuple(neg_scores.shape)}"
                )
            cost = cost.masked_fill(~neg_mask.to(torch.bool), 0.0)
        if self.max_violation:
            return cost.max(1).values.sum() if cost.shape[1] else cost.sum()
        return cost.sum()


__all__ = ["ContrastiveLoss"]

"""A SCAN-style t2i reference (Lee et al., ECCV 2018), written here for the benchmarks only.

SCAN's text-to-image cross-attention, the way SCAN's own code computes it: for each caption, its
words attend to the regions of every image in one batched product (``clipped_l2norm`` of the
leaky-ReLU affinities over words, softmax over regions with ``lambda = 9``), and the score is the
mean over words of the cosine between each word and its attended image vector. One softmax and
one cosine per word per pair — the cost SHAN is compared against.

:class:`ScanStyle` puts that scorer behind the same encoders SHAN uses (a linear region encoder,
a bi-GRU text encoder), so a training step of both models differs only in the alignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shan.model.encoders import GRUTextEncoder, ImageEncoder


def scan_t2i(
    images: torch.Tensor, captions: torch.Tensor, lengths: list[int], smooth: float = 9.0
) -> torch.Tensor:
    """SCAN's t2i scorer (clipped_l2norm, lambda 9, mean over words), one caption at a time
    against all images.

    ``images (N, k, d)``, ``captions (M, n, d)``, ``lengths`` the M real lengths -> ``(N, M)``.
    """
    n_image = images.shape[0]
    sims = []
    for i, n_word in enumerate(lengths):
        cap_i = captions[i, :n_word].unsqueeze(0).repeat(n_image, 1, 1)  # (N, n, d)
        attn = torch.bmm(images, cap_i.transpose(1, 2))  # (N, k, n)
        attn = F.leaky_relu(attn, 0.1)
        attn = attn / (attn.norm(dim=2, keepdim=True) + 1e-8)  # clipped_l2norm over words
        attn = torch.softmax(attn.transpose(1, 2) * smooth, dim=2)  # (N, n, k) over regions
        weighted = torch.bmm(attn, images)  # (N, n, d)
        row_sim = F.cosine_similarity(cap_i, weighted, dim=2).mean(dim=1, keepdim=True)
        sims.append(row_sim)
    return torch.cat(sims, 1)


class ScanStyle(nn.Module):
    """SCAN t2i on SHAN's encoders: ``forward(feats (B, k, F), tokens (B, n), lengths (B,))`` ->
    ``(B, B)`` scores (rows images, columns captions), like ``SHAN.forward``."""

    def __init__(
        self,
        img_dim: int,
        embed_dim: int,
        vocab_size: int,
        word_dim: int = 300,
        smooth: float = 9.0,
    ) -> None:
        super().__init__()
        self.img_enc = ImageEncoder(img_dim, embed_dim)
        self.txt_enc = GRUTextEncoder(vocab_size, word_dim, embed_dim)
        self.smooth = smooth

    def forward(
        self, feats: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        images = self.img_enc(feats)
        words = self.txt_enc(tokens, lengths)
        return scan_t2i(images, words, lengths.tolist(), self.smooth)


__all__ = ["scan_t2i", "ScanStyle"]

"""The broadcast position embedding that the VQ-VAE's attention and the prior (its tokens and its
conditioning frames) share: one learned table per grid axis, concatenated."""
from __future__ import annotations

import torch
import torch.nn as nn


def split_width(dim: int, n_axes: int) -> list[int]:
    """Split `dim` channels over `n_axes` as evenly as possible, larger parts first (128 -> 43,43,42).
    The reference requires dim % 3 == 0 (hence its width 576); splitting unevenly lifts that limit."""
    base, rem = divmod(dim, n_axes)
    return [base + (i < rem) for i in range(n_axes)]


class BroadcastPosEmbed(nn.Module):
    """One learned table per grid axis; the embedding of cell (a, b, c) is [T[a] | H[b] | W[c]].

    Concatenation (not a sum) keeps the axes in separate channels, and costs t + h + w rows instead of
    t * h * w. Every cell gets a distinct vector as long as the rows of each table differ."""

    def __init__(self, shape: tuple[int, ...], dim: int):
        super().__init__()
        self.shape, self.dim = tuple(shape), dim
        self.tables = nn.ParameterList(
            nn.Parameter(torch.randn(n, w) * 0.01) for n, w in zip(self.shape, split_width(dim, len(self.shape))))

    def forward(self) -> torch.Tensor:
        """The full grid of embeddings, (*shape, dim)."""
        parts = []
        for axis, table in enumerate(self.tables):
            view = [1] * len(self.shape)
            view[axis] = self.shape[axis]
            parts.append(table.view(*view, -1).expand(*self.shape, -1))
        return torch.cat(parts, dim=-1)

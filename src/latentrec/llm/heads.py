"""The latent-head interface and the rotary embedding the heads share.

Here, not in latent.py, so that FLR's head (flr.py) and LatentRATT (latent.py) both build on it while
latent.py imports flr.py to list every head in one registry (latent.HEADS) without an import cycle.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn


class LatentHead(nn.Module, abc.ABC):
    """Maps hidden states [B, L, d] of a left-padded sequence (mask [B, L], positions [B, L]) to the
    next latent [B, d]. ``regularisers()`` returns the head's auxiliary losses of the last forward
    (FLR's orthogonality/diversity/sparsity; none for LatentRATT)."""

    kind: ClassVar[str] = ""  # the config's `head:` name; llm/latent.py's HEADS maps it to the class

    @abc.abstractmethod
    def config(self) -> dict:
        """Constructor options, saved beside the weights."""

    def regularisers(self) -> dict[str, torch.Tensor]:
        return {}

    def reset(self) -> None:
        """Forget the regularisers of earlier forwards (the reasoner calls it before each thought)."""

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """Parameters only ``regularisers()`` uses (FLR's uncertainty weights): frozen by a trainer whose
        loss leaves the regularisers out, as DDP requires every trainable parameter to get a gradient."""
        return []


def rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary embedding over the full last dimension, rotate-half pairing (j with j + d/2), fp32 angles."""
    d = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # [..., d/2]
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(x.dtype)
    sin = torch.cat((angles.sin(), angles.sin()), -1).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat((-x2, x1), -1) * sin

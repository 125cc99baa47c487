"""Small tensor helpers shared by the LLM modules (batching token-id lists for a forward pass)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [B, L] ids and attention mask (1 = real token), as HF generation expects."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.int64)
    mask = torch.zeros((len(prompts), length), dtype=torch.int64)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, length - len(p) :] = torch.as_tensor(list(p), dtype=torch.int64)
            mask[i, length - len(p) :] = 1
    return ids, mask

"""The prompt prefix that all prompts of a decode share (the instruction text of the recommendation
prompt): found on token ids or on input embeddings, and prefilled once for every prompt."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicLayer

from latentrec.llm.decoding.scores import forward_last

# A common prompt prefix shorter than this is not worth a separate prefill.
MIN_SHARED_PREFIX = 8


def common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every prompt."""
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def common_embed_prefix_len(embeds: torch.Tensor, lengths: Sequence[int]) -> int:
    """Length of the longest prefix of real positions whose input embeddings are identical in every row
    of a left-padded [B, L, H] batch (the instruction text of the prompts, embedded the same way)."""
    m, width = min(lengths), embeds.shape[1]
    first = embeds[0, width - lengths[0] : width - lengths[0] + m]
    same = torch.ones(m, dtype=torch.bool, device=embeds.device)
    for i in range(1, embeds.shape[0]):
        start = width - lengths[i]
        same &= (embeds[i, start : start + m] == first).all(-1)
    return int(same.to(torch.int64).cumprod(0).sum())


def prefill_shared(model: torch.nn.Module, device, keep_one: bool, *, ids=None, embeds=None):
    """Keys/values of a prefix shared by all prompts (token ids [P] or input embeddings [P, H]; batch of
    one), or None where the cache is not a plain dynamic cache (sliding windows, hybrid models): then
    every prompt is prefilled whole."""
    if ids is not None:
        ids = torch.as_tensor([list(ids)], dtype=torch.int64, device=device)
        _, cache = forward_last(model, keep_one, input_ids=ids)
    else:
        _, cache = forward_last(model, keep_one, inputs_embeds=embeds[None].to(device))
    layers = getattr(cache, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]

"""Attention for cache rows shared by several query streams (beams of a prompt, latent copies of a prompt
in RL) under a custom 4D mask, and :func:`tree_attention`, which runs a model with it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

TREE_ATTENTION = "latentrec_beam_tree_sdpa"


class Packing:
    """Where the tokens of a packed forward sit. The model runs on the real tokens only, as one sequence
    [1, N] (no padding, no spare beam slots in its linear layers); attention alone sees them in the
    padded layout [prompt rows, q_len]: token ``i`` is query slot ``slots[i]`` of prompt row ``rows[i]``,
    and its key/value goes to column ``cols[i]`` of that row's cache."""

    def __init__(self, rows: torch.Tensor, slots: torch.Tensor, cols: torch.Tensor, q_len: int):
        self.rows, self.slots, self.cols, self.q_len = rows, slots, cols, q_len


def _beam_tree_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, beam_pack=None, **kwargs):
    """SDPA for cache rows shared by several query streams (beams of a prompt, latent copies of a
    prompt in RL) under a custom 4D mask [B, 1, q, C]; GQA without copying K/V.

    Queries come as [B, hq, q, d] (one row per cache row), or packed [1, hq, N, d] with ``beam_pack``
    (:class:`Packing`, the decoder's tree layout): then they are placed in their padded slots for the
    attention only and the output is packed again, [1, N, hq, d]. The ``g`` query heads sharing a
    key/value head are stacked along the query axis (as HF's ``pack_gqa`` does for one query), so the
    keys and values are never repeated per head; a packed call's mask comes stacked already
    ([B, 1, g * q, C], built once per forward rather than in every layer).
    """
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None or kwargs.get("s_aux") is not None:
        raise ValueError("the beam-tree KV layout supports plain full attention only; use kv_layout='expand'")
    b, hkv, _, d = key.shape
    hq = query.shape[1]
    if beam_pack is not None:
        padded = query.new_zeros((b, hq, beam_pack.q_len, d))
        padded[beam_pack.rows, :, beam_pack.slots] = query[0].transpose(0, 1)
        query = padded
    q = query.shape[2]
    g = hq // hkv
    mask = attention_mask
    if g > 1:
        query = query.reshape(b, hkv, g * q, d)
        if mask is not None and mask.shape[2] != g * q:
            mask = mask.expand(b, 1, q, mask.shape[-1]).repeat(1, 1, g, 1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, scale=scaling)
    out = out.reshape(b, hq, q, d)
    if beam_pack is not None:
        return out[beam_pack.rows, :, beam_pack.slots][None], None
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    if TREE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(TREE_ATTENTION, _beam_tree_sdpa)


@contextmanager
def tree_attention(model) -> Iterator[None]:
    """Run ``model`` with the beam-tree attention (its forward then takes a 4D mask over shared cache rows,
    and ``beam_pack`` for packed queries); its own attention implementation is restored on exit."""
    _register()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = TREE_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous

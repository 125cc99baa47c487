"""Log-probabilities of the next token, as HF's beam search computes them (float32 log-softmax over the
full vocabulary), from the model's logits or, without building the logit matrix, from its final hidden
states and LM head."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

# Vocabulary rows per slice of the LM head (see HiddenScores): a slice's logits for a few hundred beams
# stay in cache while they are reduced and read.
VOCAB_SLICE = 2048


def supports_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_last(model: torch.nn.Module, keep_one: bool, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """Float32 logits of the last position [N, V] and the updated cache."""
    if keep_one:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs, use_cache=True, return_dict=True)
    return out.logits[:, -1, :].to(dtype=torch.float32), out.past_key_values


class LogitScores:
    """Log-probabilities from float32 logits [N, V], as HF computes them."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def logprobs(self, rows: torch.Tensor, toks: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits, dim=-1)[rows, toks]  # one fused pass (logsumexp takes four)


class HiddenScores:
    """Log-probabilities of chosen tokens from final hidden states [N, H] and the LM head, the vocabulary
    taken ``VOCAB_SLICE`` rows at a time: each slice's logits (model dtype, then float32, as HF) are
    reduced to a log-sum-exp and read at the chosen tokens while still in cache. The [N, V] logit matrix
    (63 MB for 320 beams of SmolLM2, 390 MB for Qwen2.5's 152k vocabulary) is never built; the values
    are the full product's."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Linear):
        self.hidden, self.head = hidden, head

    def logprobs(self, rows: torch.Tensor, toks: torch.Tensor) -> torch.Tensor:
        weight, bias = self.head.weight, self.head.bias
        n_slices = -(-weight.shape[0] // VOCAB_SLICE)
        piece = torch.div(toks, VOCAB_SLICE, rounding_mode="floor")
        order = torch.argsort(piece, stable=True)
        ends = torch.bincount(piece, minlength=n_slices).cumsum(0).tolist()
        picked = torch.empty(toks.numel(), dtype=torch.float32, device=toks.device)
        lse, begin = [], 0
        for i in range(n_slices):
            lo, hi = i * VOCAB_SLICE, (i + 1) * VOCAB_SLICE
            logits = F.linear(self.hidden, weight[lo:hi], None if bias is None else bias[lo:hi]).float()
            lse.append(torch.logsumexp(logits, dim=-1))
            sel = order[begin : ends[i]]
            begin = ends[i]
            if sel.numel():
                picked[sel] = logits[rows[sel], toks[sel] - lo]
        return picked - torch.logsumexp(torch.stack(lse, dim=-1), dim=-1)[rows]


def plain_lm_head(model) -> bool:
    """Whether logits are exactly ``get_output_embeddings()(get_decoder()(...).last_hidden_state)`` (Llama,
    Qwen2, ...; not models that scale or soft-cap their logits)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    try:
        return model.get_decoder() is not None and isinstance(model.get_output_embeddings(), torch.nn.Linear)
    except (AttributeError, NotImplementedError):
        return False

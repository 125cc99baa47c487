"""Catalog-constrained beam search for generative recommenders (BIGRec, D3, LatentR3).

:func:`constrained_beam_search` returns, for every prompt, the ranked hypotheses that HF's
``model.generate(num_beams=K, num_return_sequences=R, do_sample=False, length_penalty=lp,
early_stopping=False, prefix_allowed_tokens_fn=<catalog trie>)`` returns (transformers 5.23,
``GenerationMixin._beam_search``), computed faster:

* each prompt is prefilled once (not ``num_beams`` times), and only the last position is projected onto
  the vocabulary (``logits_to_keep=1``); the token prefix that all prompts of a call share (the
  instruction text of the recommendation prompt, about half of it) is prefilled only once per call;
* ``kv_layout="tree"`` (the default where supported): the prompt's keys/values stay one cache row per
  prompt; every step appends the live beams' new tokens as columns of that row and a custom 4D mask
  lets each beam see the prompt and its own ancestors only, so the prompt's KV is never expanded,
  reordered or re-concatenated (a buffer with spare room takes the new columns); the model runs on
  real tokens only, packed into one sequence (no left padding in the prefill, no spare beam slots in
  the steps), and the LM head is applied a vocabulary slice at a time (no [beams, V] logit matrix);
  ``kv_layout="expand"``: HF's layout, one row per live beam gathered from the prompt's row after the
  prefill (the ``repeat_interleave`` expansion) and reordered every step; it is the fallback for
  attention implementations or caches the tree layout does not handle (flash-attention, sliding
  windows, ...);
* allowed tokens come from a :class:`~latentrec.llm.trie.TitleTrie` with tensor ops, no Python call per
  beam;
* many prompts run per batch (sorted by length to limit padding), and a prompt leaves the batch as soon
  as its result is final (HF keeps stepping it until the whole batch is done).

Scoring follows HF step by step: log-softmax of the float32 logits over the full vocabulary, then the
constraint (disallowed tokens -> -inf), plus the running beam score; the top
``max(2, 1 + n_eos) * num_beams`` candidates per prompt; a candidate ending in EOS (or hitting
``max_new_tokens``) that ranks in the top ``num_beams`` is finalised with score
``sum(logprob) / generated_len ** length_penalty`` (EOS counted); the best ``num_beams`` unfinished
candidates run on; a prompt stops when its ``num_beams`` finished slots are full and the best running
score divided by ``cur_generated_len ** length_penalty`` is no better than the worst finished score (HF's
``early_stopping=False`` heuristic), or at ``max_new_tokens``.

HF returns padding entries when fewer than ``num_return`` real hypotheses exist (copies of the prompt's
first beam seeded by the ``-1e9`` initial scores of beams 1.., or ``-inf`` rows); those can never be
catalog entries and are dropped here, so a result list can be shorter than ``num_return``. Every

Modules: ``api`` (:func:`constrained_beam_search`, :class:`DecodeConfig`), ``beams`` (the step-by-step
bookkeeping above), ``layouts`` (the two KV layouts), ``attention`` (the attention function of the tree
layout and :func:`tree_attention`, which runs a model with it), ``prefix`` (the shared prompt prefix),
``scores`` (log-probabilities from logits or from hidden states and the LM head), ``counts``
(:class:`DecodeCounts`, the FLOP floor).
"""

from latentrec.llm.decoding.api import DecodeConfig, constrained_beam_search, hypotheses_to_items
from latentrec.llm.decoding.attention import tree_attention
from latentrec.llm.decoding.beams import Hypothesis
from latentrec.llm.decoding.counts import DecodeCounts

__all__ = [
    "DecodeConfig",
    "DecodeCounts",
    "Hypothesis",
    "constrained_beam_search",
    "hypotheses_to_items",
    "tree_attention",
]

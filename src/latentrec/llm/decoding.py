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
returned hypothesis ranks exactly where HF ranks it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from transformers.cache_utils import DynamicLayer

from latentrec.llm.trie import TitleTrie

Hypothesis = tuple[int, float]  # (trie node of the generated sequence, final score)

NEG_INF = float("-inf")
# HF's threshold for a finished slot that is still empty (`_check_early_stop_heuristic`).
_EMPTY_SLOT_SCORE = -1.0e9
# A common prompt prefix shorter than this is not worth a separate prefill.
_MIN_SHARED_PREFIX = 8


def _as_id_list(eos_token_id: int | Sequence[int]) -> list[int]:
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    ids = [int(t) for t in eos_token_id]
    if not ids:
        raise ValueError("eos_token_id must name at least one token")
    return ids


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _forward_last(model: torch.nn.Module, keep_one: bool, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """Float32 logits of the last position [N, V] and the updated cache."""
    if keep_one:
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs, use_cache=True, return_dict=True)
    return out.logits[:, -1, :].to(dtype=torch.float32), out.past_key_values


# Vocabulary rows per slice of the LM head (see _HiddenScores): a slice's logits for a few hundred beams
# stay in cache while they are reduced and read.
_VOCAB_SLICE = 2048


class _LogitScores:
    """Log-probabilities from float32 logits [N, V], as HF computes them."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def logprobs(self, rows: torch.Tensor, toks: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits, dim=-1)[rows, toks]  # one fused pass (logsumexp takes four)


class _HiddenScores:
    """Log-probabilities of chosen tokens from final hidden states [N, H] and the LM head, the vocabulary
    taken ``_VOCAB_SLICE`` rows at a time: each slice's logits (model dtype, then float32, as HF) are
    reduced to a log-sum-exp and read at the chosen tokens while still in cache. The [N, V] logit matrix
    (63 MB for 320 beams of SmolLM2, 390 MB for Qwen2.5's 152k vocabulary) is never built; the values
    are the full product's."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Linear):
        self.hidden, self.head = hidden, head

    def logprobs(self, rows: torch.Tensor, toks: torch.Tensor) -> torch.Tensor:
        weight, bias = self.head.weight, self.head.bias
        n_slices = -(-weight.shape[0] // _VOCAB_SLICE)
        piece = torch.div(toks, _VOCAB_SLICE, rounding_mode="floor")
        order = torch.argsort(piece, stable=True)
        ends = torch.bincount(piece, minlength=n_slices).cumsum(0).tolist()
        picked = torch.empty(toks.numel(), dtype=torch.float32, device=toks.device)
        lse, begin = [], 0
        for i in range(n_slices):
            lo, hi = i * _VOCAB_SLICE, (i + 1) * _VOCAB_SLICE
            logits = F.linear(self.hidden, weight[lo:hi], None if bias is None else bias[lo:hi]).float()
            lse.append(torch.logsumexp(logits, dim=-1))
            sel = order[begin : ends[i]]
            begin = ends[i]
            if sel.numel():
                picked[sel] = logits[rows[sel], toks[sel] - lo]
        return picked - torch.logsumexp(torch.stack(lse, dim=-1), dim=-1)[rows]


def _plain_lm_head(model) -> bool:
    """Whether logits are exactly ``get_output_embeddings()(get_decoder()(...).last_hidden_state)`` (Llama,
    Qwen2, ...; not models that scale or soft-cap their logits)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    try:
        return model.get_decoder() is not None and isinstance(model.get_output_embeddings(), torch.nn.Linear)
    except (AttributeError, NotImplementedError):
        return False


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


def _common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
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


def _common_embed_prefix_len(embeds: torch.Tensor, lengths: Sequence[int]) -> int:
    """Length of the longest prefix of real positions whose input embeddings are identical in every row
    of a left-padded [B, L, H] batch (the instruction text of the prompts, embedded the same way)."""
    m, width = min(lengths), embeds.shape[1]
    first = embeds[0, width - lengths[0] : width - lengths[0] + m]
    same = torch.ones(m, dtype=torch.bool, device=embeds.device)
    for i in range(1, embeds.shape[0]):
        start = width - lengths[i]
        same &= (embeds[i, start : start + m] == first).all(-1)
    return int(same.to(torch.int64).cumprod(0).sum())


def _prefill_shared(model: torch.nn.Module, device, keep_one: bool, *, ids=None, embeds=None):
    """Keys/values of a prefix shared by all prompts (token ids [P] or input embeddings [P, H]; batch of
    one), or None where the cache is not a plain dynamic cache (sliding windows, hybrid models): then
    every prompt is prefilled whole."""
    if ids is not None:
        _, cache = _forward_last(model, keep_one, input_ids=torch.as_tensor([list(ids)], dtype=torch.int64, device=device))
    else:
        _, cache = _forward_last(model, keep_one, inputs_embeds=embeds[None].to(device))
    layers = getattr(cache, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


@dataclass
class DecodeCounts:
    """The work of a decode that any prefix-aware decoder must do, counted while it runs: the shared
    prefix's tokens once per call, each prompt's own tokens, one token per live beam and step, and one
    vocabulary projection per prompt and per live beam token. ``attended`` sums, over all those tokens,
    the keys each attends to (its own prefix), for the attention's FLOPs. Padding and spare beam slots
    are not counted: this is the floor a decoder is measured against, not what it ran."""

    prompts: int = 0
    shared_tokens: int = 0
    prompt_tokens: int = 0
    beam_tokens: int = 0
    attended: int = 0

    @property
    def backbone_tokens(self) -> int:
        return self.shared_tokens + self.prompt_tokens + self.beam_tokens

    @property
    def vocabulary_rows(self) -> int:
        return self.prompts + self.beam_tokens

    def add_shared(self, n: int) -> None:
        self.shared_tokens += n
        self.attended += n * (n + 1) // 2

    def add_prompts(self, own_mask: torch.Tensor, n_shared: int) -> None:
        own = own_mask.sum(1)
        self.prompts += own_mask.shape[0]
        self.prompt_tokens += int(own.sum())
        # the t-th own token (1-based) attends to n_shared + t keys
        self.attended += int((n_shared * own + own * (own + 1) // 2).sum())

    def add_beams(self, context: torch.Tensor) -> None:
        """One step's live beams; `context` the keys each attends to (prompt length + generated tokens)."""
        self.beam_tokens += context.numel()
        self.attended += int(context.sum())

    def flops(self, model) -> dict[str, float]:
        """The floor in FLOPs for `model` (a causal LM with ``get_decoder().layers``): 2 per weight of the
        decoder layers' linear maps per backbone token plus 2 * hidden * vocabulary per vocabulary
        projection (``linear_and_head``, what a fraction of the floor is measured on), and apart 4 *
        heads * head_dim per layer per attended key (``attention``: scores and weighted sum). Norms,
        RoPE and activations are not counted."""
        config = model.config.get_text_config()
        layers = model.get_decoder().layers
        linear = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
        head = model.get_output_embeddings().weight.numel()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return {"linear_and_head": 2.0 * linear * self.backbone_tokens + 2.0 * head * self.vocabulary_rows,
                "attention": 4.0 * len(layers) * config.num_attention_heads * head_dim * self.attended}


# ---------------------------------------------------------------------------------- KV-cache layouts
_TREE_ATTN = "latentrec_beam_tree_sdpa"


class _Packing:
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
    (:class:`_Packing`, the decoder's tree layout): then they are placed in their padded slots for the
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


def _register_tree_attention() -> None:
    from transformers import AttentionInterface

    if _TREE_ATTN not in AttentionInterface._global_mapping:
        AttentionInterface.register(_TREE_ATTN, _beam_tree_sdpa)


class _BufferLayer(DynamicLayer):
    """Cache layer of the tree layout: one row per prompt in a zero-initialised buffer with spare room.

    A forward writes the keys/values of its packed tokens at their (row, column) in place (no torch.cat
    of the whole cache); columns never written stay zero, so a masked-out column is finite and cannot
    turn an attention row into NaN. The buffer is allocated at the first write (its head count and width
    come from the model)."""

    def __init__(self, rows: int, capacity: int, shared: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.rows, self.capacity, self.shared = rows, capacity, shared
        self.pack: _Packing | None = None
        self.length = 0 if shared is None else shared[0].shape[2]
        self.is_initialized = True
        self._kbuf = self._vbuf = None

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._kbuf = key_states.new_zeros((self.rows, key_states.shape[1], self.capacity, key_states.shape[-1]))
        self._vbuf = value_states.new_zeros((self.rows, value_states.shape[1], self.capacity, value_states.shape[-1]))
        if self.shared is not None:  # the prefix all prompts share: the first columns of every row
            self._kbuf[:, :, : self.length] = self.shared[0]
            self._vbuf[:, :, : self.length] = self.shared[1]
            self.shared = None

    def _grow(self, needed: int) -> None:
        capacity = max(needed, self._kbuf.shape[2] + self._kbuf.shape[2] // 2)
        for name in ("_kbuf", "_vbuf"):
            old = getattr(self, name)
            new = old.new_zeros((*old.shape[:2], capacity, old.shape[-1]))
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def update(self, key_states, value_states, *args, **kwargs):
        pack = self.pack
        if self._kbuf is None:
            self._allocate(key_states, value_states)
        end = self.length + pack.q_len  # the step's columns: q_len slots per row, written or not
        if end > self._kbuf.shape[2]:
            self._grow(end)
        self._kbuf[pack.rows, :, pack.cols] = key_states[0].transpose(0, 1)
        self._vbuf[pack.rows, :, pack.cols] = value_states[0].transpose(0, 1)
        self.length = end
        self.keys = self._kbuf[:, :, :end]
        self.values = self._vbuf[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._kbuf = self._kbuf[indices]
        self._vbuf = self._vbuf[indices]
        self.rows = indices.numel()


class _ExpandLayout:
    """One KV row per live beam, gathered from its prompt's prefill row and reordered every step (HF's layout)."""

    def __init__(self, model, cache, *, prompt_mask, has_padding, next_position, num_beams, keep_one):
        self.model, self.cache, self.keep_one = model, cache, keep_one
        self.prompt_mask, self.has_padding, self.next_position = prompt_mask, has_padding, next_position
        b = prompt_mask.shape[0]
        device = prompt_mask.device
        self.row_of = torch.full((b, num_beams), -1, dtype=torch.int64, device=device)
        self.row_of[:, 0] = torch.arange(b, device=device)  # after prefill: row p = prompt p, beam 0
        self.gen_mask = torch.ones((b, 0), dtype=prompt_mask.dtype, device=device)

    def select_prompts(self, idx: torch.Tensor) -> None:
        # The reorder below drops the rows of prompts that left.
        self.row_of, self.prompt_mask = self.row_of[idx], self.prompt_mask[idx]
        self.gen_mask, self.next_position = self.gen_mask[idx], self.next_position[idx]

    def forward(self, src_beam, tokens, alive, step) -> torch.Tensor:
        a, k = tokens.shape
        device = tokens.device
        flat_alive = alive.reshape(-1)
        src_row = torch.gather(self.row_of, 1, src_beam).reshape(-1)[flat_alive]
        self.cache.reorder_cache(src_row)
        n_live = int(flat_alive.sum())
        self.row_of = torch.full((a, k), -1, dtype=torch.int64, device=device)
        self.row_of[alive] = torch.arange(n_live, device=device)
        prompt_of_row = torch.arange(a, device=device).repeat_interleave(k)[flat_alive]
        self.gen_mask = torch.cat((self.gen_mask, self.gen_mask.new_ones((a, 1))), dim=1)
        mask = torch.cat((self.prompt_mask, self.gen_mask), dim=1)[prompt_of_row] if self.has_padding else None
        logits, self.cache = _forward_last(
            self.model,
            self.keep_one,
            input_ids=tokens.reshape(-1)[flat_alive][:, None],
            attention_mask=mask,
            position_ids=(self.next_position[prompt_of_row] + step)[:, None],
            past_key_values=self.cache,
        )
        return _LogitScores(logits)  # of the live beams, in (prompt, beam) order


class _TreeLayout:
    """One KV row per prompt; every step appends the new tokens of the live beams as columns of that row.

    A beam's query attends to the prompt and to the columns of its own ancestors (a custom 4D mask), so
    the prompt's keys/values are stored once and never copied or reordered; beams that die simply
    stop being referenced. The model runs on real tokens only (:class:`_Packing`): the prefill on each
    prompt's own tokens without padding, each step on the live beams only (late in a search most beams
    have finished); only attention sees the padded [prompts, slots] layout.
    """

    def __init__(self, model, *, prompt_mask, num_beams, max_new_tokens, keep_one, shared):
        from transformers import DynamicCache

        self.model, self.keep_one = model, keep_one
        b, own = prompt_mask.shape
        n_shared = 0 if shared is None else shared[0][0].shape[2]
        self.prompt_len = n_shared + own
        # Room for 16 steps to start with; the buffer grows by half when full (max_new_tokens is often
        # far from reached, and the batch of prompts can be large).
        capacity = self.prompt_len + num_beams * min(max_new_tokens, 16)
        text = model.config.get_text_config()
        n_layers = text.num_hidden_layers
        self.cache = DynamicCache(ddp_cache_data=[(None, None)] * n_layers)
        self.cache.layers = [_BufferLayer(b, capacity, None if shared is None else shared[i]) for i in range(n_layers)]
        self.prompt_mask = torch.cat((prompt_mask.new_ones((b, n_shared)), prompt_mask), dim=1).bool()
        self.anc = torch.zeros((b, num_beams, 0), dtype=torch.int64, device=prompt_mask.device)
        self.cols = self.prompt_len  # columns written so far in every row
        self.dtype = next(model.parameters()).dtype
        self.group = text.num_attention_heads // (getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
        self.plain_head = _plain_lm_head(model)
        position = (n_shared + prompt_mask.cumsum(-1) - 1).masked_fill(prompt_mask == 0, 0)
        self.next_position = position[:, -1] + 1  # [B]; the last column is a real token (left padding)
        self._own_position, self._n_shared = position, n_shared

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """Additive 4D mask from allowed [B, q, C], stacked for the ``g`` query heads of a key/value head
        as the attention stacks them: [B, 1, g * q, C]. Built once per forward, read by every layer."""
        b, q, c = allowed.shape
        mask = torch.zeros((b, self.group, q, c), dtype=self.dtype, device=allowed.device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(self.dtype).min)
        return mask.reshape(b, 1, self.group * q, c)

    def _run(self, pack: _Packing, allowed: torch.Tensor, keep: torch.Tensor | None, **inputs):
        """The model on one packed sequence; the vocabulary scores of the tokens ``keep`` (all if None)."""
        for layer in self.cache.layers:
            layer.pack = pack
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = _TREE_ATTN
        kw = dict(**inputs, attention_mask=self._mask(allowed), past_key_values=self.cache, use_cache=True,
                  return_dict=True, beam_pack=pack)
        try:
            if self.plain_head:  # the backbone here, the LM head slice by slice in _HiddenScores
                hidden = self.model.get_decoder()(**kw).last_hidden_state[0]
                return _HiddenScores(hidden if keep is None else hidden[keep], self.model.get_output_embeddings())
            if self.keep_one:
                logits = self.model(**kw, logits_to_keep=0 if keep is None else keep).logits[0]
            else:
                logits = self.model(**kw).logits[0]
                logits = logits if keep is None else logits[keep]
        finally:
            config._attn_implementation = previous
        return _LogitScores(logits.to(dtype=torch.float32))

    def prefill(self, input_ids, inputs_embeds):
        """Each prompt's own tokens (after the shared prefix), packed; scores of each last token [B]."""
        real = self.prompt_mask[:, self._n_shared :]
        b, own = real.shape
        device = real.device
        rows, slots = torch.nonzero(real, as_tuple=True)  # row-major: a prompt's tokens in order
        pack = _Packing(rows, slots, self._n_shared + slots, own)
        allowed = torch.ones((b, own, own), dtype=torch.bool, device=device).tril_()
        allowed &= real[:, None, :]
        allowed |= ~real[:, :, None]  # a padding query (never read) sees everything: no all-masked row
        allowed = torch.cat((allowed.new_ones((b, own, self._n_shared)), allowed), dim=2)
        last = torch.cumsum(real.sum(1), 0) - 1  # packed index of each prompt's last token
        inputs = {"position_ids": self._own_position[rows, slots][None]}
        if input_ids is not None:
            inputs["input_ids"] = input_ids[rows, slots][None]
        else:
            inputs["inputs_embeds"] = inputs_embeds[rows, slots][None]
        return self._run(pack, allowed, last, **inputs)

    def select_prompts(self, idx: torch.Tensor) -> None:
        self.cache.batch_select_indices(idx)
        self.prompt_mask, self.anc, self.next_position = self.prompt_mask[idx], self.anc[idx], self.next_position[idx]

    def forward(self, src_beam, tokens, alive, step) -> torch.Tensor:
        a, k = tokens.shape
        device = tokens.device
        n_alive = alive.sum(1)  # >= 1: a prompt whose beams all died has left the batch
        m = int(n_alive.max())
        slot = alive.cumsum(1) - 1  # a live beam's query slot (and new column) among its prompt's live beams
        own = self.cols + slot
        parents = torch.gather(self.anc, 1, src_beam[:, :, None].expand(a, k, step))
        self.anc = torch.cat((parents, own[:, :, None]), dim=2)  # rows of dead beams are never read
        p_idx, b_idx = torch.nonzero(alive, as_tuple=True)  # live beams in (prompt, beam) order
        q_slot = slot[p_idx, b_idx]
        beam_of_slot = torch.zeros((a, m), dtype=torch.int64, device=device)  # spare slots: beam 0's mask row
        beam_of_slot[p_idx, q_slot] = b_idx
        q_anc = torch.gather(self.anc, 1, beam_of_slot[:, :, None].expand(a, m, step + 1))
        cols = self.cols + m
        allowed = torch.zeros((a, m, cols), dtype=torch.bool, device=device)
        allowed[:, :, : self.prompt_len] = self.prompt_mask[:, None, :]
        allowed.scatter_(2, q_anc, True)
        pack = _Packing(p_idx, q_slot, self.cols + q_slot, m)
        scores = self._run(pack, allowed, None, input_ids=tokens[p_idx, b_idx][None],
                           position_ids=(self.next_position[p_idx] + step)[None])
        self.cols = cols
        return scores  # of the live beams, in (prompt, beam) order


def _tree_supported(model) -> bool:
    """Plain full attention (sdpa/eager) with a plain dynamic cache in every layer: no sliding windows,
    no hybrid or encoder-decoder models (those take the expand layout)."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(config, "is_encoder_decoder", False):
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # an exotic config: take the general layout
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


# ------------------------------------------------------------------------------------ beam search
def _prefill(model, *, input_ids, inputs_embeds, attention_mask, keep_one, shared):
    """Prefill one row per prompt (mask [B, L], 1 = real token), after the shared prefix's keys/values
    where given (a view of its one row, not B copies). Returns (last-position logits [B, V], cache,
    cache-row mask [B, P + L], whether it has padding, next position [B])."""
    b = attention_mask.shape[0]
    # HF drops an all-ones mask before the forward passes; padded batches keep theirs.
    has_padding = not bool(attention_mask.all())
    n_shared = 0 if shared is None else shared[0][0].shape[2]
    position_ids = (n_shared + attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    next_position = position_ids[:, -1] + 1  # [B]; the last column is a real token (left padding)
    past = None
    if shared is not None:
        from transformers import DynamicCache

        past = DynamicCache(ddp_cache_data=[(None, None)] * len(shared))
        for layer, (kk, vv) in zip(past.layers, shared):  # expanded views: the update's cat copies them once
            layer.lazy_initialization(kk, vv)
            layer.keys, layer.values = kk.expand(b, -1, -1, -1), vv.expand(b, -1, -1, -1)
        attention_mask = torch.cat((attention_mask.new_ones((b, n_shared)), attention_mask), dim=1)
    logits, cache = _forward_last(model, keep_one, input_ids=input_ids, inputs_embeds=inputs_embeds,
                                  attention_mask=attention_mask if has_padding else None,
                                  position_ids=position_ids, past_key_values=past)
    return logits, cache, attention_mask, has_padding, next_position


class _Beams:
    """Per active prompt: running beams (score, trie node) and the `num_beams` finished slots."""

    def __init__(self, b: int, k: int, device):
        self.active = torch.arange(b, device=device)  # batch index of each active prompt
        # Only beam 0 holds a real prefix at the start (HF seeds beams 1.. with -1e9, which only ever
        # yields non-catalog padding hypotheses): the other beams start dead (-inf) on node -1.
        self.run_scores = torch.full((b, k), NEG_INF, device=device)
        self.run_scores[:, 0] = 0.0
        self.run_nodes = torch.full((b, k), -1, dtype=torch.int64, device=device)
        self.run_nodes[:, 0] = 0
        self.fin_scores = torch.full((b, k), NEG_INF, device=device)
        self.fin_nodes = torch.full((b, k), -1, dtype=torch.int64, device=device)

    def select(self, idx: torch.Tensor) -> None:
        for name in ("active", "run_scores", "run_nodes", "fin_scores", "fin_nodes"):
            setattr(self, name, getattr(self, name)[idx])


def _candidates(vocab, live, beams: _Beams, trie: TitleTrie, k: int, n_keep: int):
    """The best `n_keep` catalog continuations per prompt, best first: (score, source beam, token, node),
    each [A, n_keep] (-inf score, node -1 past the real ones).

    log-softmax over the full vocabulary, then the catalog constraint: only the tokens the trie allows
    after each live beam's node are finite, so only those candidates are formed (HF's dense beams x
    vocabulary matrix holds -inf everywhere else). `vocab` (_LogitScores / _HiddenScores): scores of the live
    beams; `live` their flat index prompt * k + beam, ascending."""
    a = beams.active.numel()
    device = live.device
    rows, edges = trie._edges(beams.run_nodes.reshape(-1)[live])
    toks = trie.child_tokens[edges]
    flat = live[rows]  # ascending: candidates come grouped by prompt
    scores = beams.run_scores.reshape(-1)[flat] + vocab.logprobs(rows, toks)
    prompt = flat // k
    counts = torch.bincount(prompt, minlength=a)
    width = max(n_keep, int(counts.max())) if prompt.numel() else n_keep
    pos = torch.arange(prompt.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[prompt]
    dense = torch.full((a, width), NEG_INF, device=device)
    dense[prompt, pos] = scores
    dense_id = torch.zeros((a, width), dtype=torch.int64, device=device)  # index into the candidates
    dense_id[prompt, pos] = torch.arange(prompt.numel(), device=device)
    cand_scores, pick = torch.topk(dense, n_keep, dim=1)  # sorted, best first; -inf past the real ones
    cand = torch.gather(dense_id, 1, pick)
    if prompt.numel() == 0:  # nothing allowed anywhere: every beam dies
        zeros = torch.zeros_like(cand)
        return cand_scores, zeros, zeros, torch.full_like(cand, -1)
    real = torch.isfinite(cand_scores)
    return cand_scores, flat[cand] % k, toks[cand], torch.where(real, trie.child_nodes[edges][cand], -1)


def _advance(beams: _Beams, cands, *, step, last_step, eos_ids, length_penalty, top_rank):
    """HF's beam bookkeeping for one step: finished candidates in the top `num_beams` ranks enter the
    finished slots (length-normalised), the best `num_beams` unfinished ones run on. Returns (source
    beam, next token, alive), each [A, k], and which prompts are done."""
    cand_scores, cand_beam, cand_tok, cand_nodes = cands
    k = beams.run_scores.shape[1]
    # HF's max-length criterion marks every candidate of the last step as finished.
    cand_done = torch.ones_like(cand_tok, dtype=torch.bool) if last_step else torch.isin(cand_tok, eos_ids)
    new_fin = cand_scores / ((step + 1) ** length_penalty)
    eligible = cand_done & top_rank[None, :] & torch.isfinite(cand_scores)
    merged_scores = torch.cat((beams.fin_scores, torch.where(eligible, new_fin, NEG_INF)), dim=1)
    merged_nodes = torch.cat((beams.fin_nodes, cand_nodes), dim=1)
    beams.fin_scores, pick = torch.topk(merged_scores, k, dim=1)
    beams.fin_nodes = torch.gather(merged_nodes, 1, pick)

    beams.run_scores, pick = torch.topk(torch.where(cand_done, NEG_INF, cand_scores), k, dim=1)
    src_beam = torch.gather(cand_beam, 1, pick)
    next_tok = torch.gather(cand_tok, 1, pick)
    alive = torch.isfinite(beams.run_scores)
    beams.run_nodes = torch.where(alive, torch.gather(cand_nodes, 1, pick), -1)

    # HF's early_stopping=False heuristic: stop once the best running beam, normalised by the current
    # generated length, cannot beat the worst of `num_beams` finished hypotheses.
    best_running = beams.run_scores[:, 0] / ((step + 1) ** length_penalty)
    slots_full = torch.isfinite(beams.fin_scores).all(dim=1)
    worst_finished = torch.where(slots_full, beams.fin_scores.min(dim=1).values,
                                 torch.full_like(best_running, _EMPTY_SLOT_SCORE))
    done = ~(best_running > worst_finished) | ~alive[:, 0]
    if last_step:
        done = torch.ones_like(done)
    return src_beam, next_tok, alive, done


def _collect(beams: _Beams, slots: list[int], results: list[list[Hypothesis]], num_return: int) -> None:
    """Write the finished hypotheses of the given prompt slots into `results` (real ones only)."""
    for slot in slots:
        scores = beams.fin_scores[slot]
        keep = torch.isfinite(scores)
        nodes = beams.fin_nodes[slot][keep][:num_return].tolist()
        vals = scores[keep][:num_return].tolist()
        results[int(beams.active[slot])] = list(zip(nodes, vals))


def _search_batch(
    model: torch.nn.Module,
    trie: TitleTrie,
    *,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor,
    num_beams: int,
    num_return: int,
    length_penalty: float,
    max_new_tokens: int,
    eos_ids: torch.Tensor,
    keep_one: bool,
    kv_layout: str,
    shared: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    counts: DecodeCounts | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for one left-padded batch of prompts (mask [B, L], 1 = real token).

    With ``shared`` (per layer the keys/values [1, H, P, D] of a prefix common to all prompts),
    ``input_ids`` / ``inputs_embeds`` / ``attention_mask`` hold the rest of each prompt, left-padded; the
    cache row of a prompt is then ``[shared prefix | padding | rest]`` with positions ``0..len-1`` over
    its real tokens.
    """
    device = attention_mask.device
    b, k = attention_mask.shape[0], num_beams
    n_keep = max(2, 1 + eos_ids.numel()) * k  # HF's `beams_to_keep`
    trie = trie.to(device)
    if kv_layout == "tree":
        layout = _TreeLayout(model, prompt_mask=attention_mask, num_beams=k, max_new_tokens=max_new_tokens,
                             keep_one=keep_one, shared=shared)
        vocab = layout.prefill(input_ids, inputs_embeds)
    else:
        logits, cache, row_mask, has_padding, next_position = _prefill(
            model, input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            keep_one=keep_one, shared=shared)
        vocab = _LogitScores(logits)
        layout = _ExpandLayout(model, cache, prompt_mask=row_mask, has_padding=has_padding,
                               next_position=next_position, num_beams=k, keep_one=keep_one)
    beams = _Beams(b, k, device)
    live = torch.arange(b, device=device) * k  # flat index prompt * k + beam of each row of `vocab`
    if counts is not None:
        n_shared = 0 if shared is None else shared[0][0].shape[2]
        counts.add_prompts(attention_mask, n_shared)
        prompt_len = n_shared + attention_mask.sum(1)
    results: list[list[Hypothesis]] = [[] for _ in range(b)]
    top_rank = torch.arange(n_keep, device=device) < k  # HF's `top_num_beam_mask`
    for step in range(max_new_tokens):
        cands = _candidates(vocab, live, beams, trie, k, n_keep)
        src_beam, next_tok, alive, done = _advance(
            beams, cands, step=step, last_step=step + 1 >= max_new_tokens, eos_ids=eos_ids,
            length_penalty=length_penalty, top_rank=top_rank)
        if bool(done.any()):  # a finished prompt leaves the batch at once (its result is final)
            _collect(beams, torch.nonzero(done).flatten().tolist(), results, num_return)
            stay = torch.nonzero(~done).flatten()
            if stay.numel() == 0:
                break
            beams.select(stay)
            src_beam, next_tok, alive = src_beam[stay], next_tok[stay], alive[stay]
            layout.select_prompts(stay)
        vocab = layout.forward(src_beam, next_tok, alive, step)
        live = torch.nonzero(alive.reshape(-1)).flatten()
        if counts is not None:  # a beam token of step s attends to its prompt and s + 1 generated tokens
            counts.add_beams(prompt_len[beams.active[live // k]] + step + 1)
    return results


@torch.inference_mode()
def constrained_beam_search(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]] | None,
    trie: TitleTrie,
    *,
    prefix_embeds: torch.Tensor | None = None,
    prefix_attention_mask: torch.Tensor | None = None,
    num_beams: int = 10,
    num_return: int = 10,
    length_penalty: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    eos_token_id: int | Sequence[int],
    pad_token_id: int | None = None,
    sort_by_length: bool = True,
    kv_layout: str = "auto",
    share_prefix: bool = True,
    counts: DecodeCounts | None = None,
) -> list[list[Hypothesis]]:
    """Catalog-constrained beam search; for each prompt its ranked ``[(trie_node, score), ...]``.

    Give the prompts either as token-id lists (``prompts``), or as an embedding prefix
    (``prompts=None``, ``prefix_embeds`` [B, L, H] in the model's dtype, ``prefix_attention_mask`` [B, L],
    left-padded, 1 = real position, default all ones); the prefix goes through the model as
    ``inputs_embeds`` in one prefill, which is where a latent-reasoning head injects latent tokens.

    ``trie`` holds the catalog token sequences (each ending with an EOS token); a hypothesis's catalog
    indices are ``trie.items(node)`` and its tokens ``trie.sequence(node)`` (a node that is not a
    terminal can only come from a sequence cut at ``max_new_tokens``, as in HF). Scores are
    ``sum(logprob) / len ** length_penalty`` (1.0 = BIGRec, 0.0 = D3); lists are sorted best first and
    hold at most ``num_return`` entries. ``batch_size`` prompts are decoded together (each with
    ``num_beams`` beams); ``sort_by_length`` groups prompts of similar length to save padding.
    ``kv_layout``: ``"tree"``, ``"expand"`` or ``"auto"`` (tree for sdpa/eager attention with a plain
    dynamic cache, else expand); both give the same hypotheses. ``share_prefix``: prefill the token prefix
    common to all ``prompts`` once and reuse its keys/values for every prompt (same hypotheses,
    scores equal up to float rounding; the embeddings path shares the prefix whose input embeddings are
    identical in every row). ``counts``: a :class:`DecodeCounts` to add this call's tokens to (the FLOP
    floor of a benchmark). The caller puts the model in eval mode.
    """
    if num_beams < 1 or not 1 <= num_return <= num_beams:
        raise ValueError(f"need 1 <= num_return ({num_return}) <= num_beams ({num_beams})")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if kv_layout not in ("auto", "tree", "expand"):
        raise ValueError(f"kv_layout must be 'auto', 'tree' or 'expand', got {kv_layout!r}")
    if (prompts is None) == (prefix_embeds is None):
        raise ValueError("give exactly one of `prompts` (token ids) and `prefix_embeds`")

    device = next(model.parameters()).device
    eos_ids = torch.tensor(_as_id_list(eos_token_id), dtype=torch.int64, device=device)
    keep_one = _supports_logits_to_keep(model)
    if kv_layout == "auto":
        kv_layout = "tree" if _tree_supported(model) else "expand"
    if kv_layout == "tree":
        _register_tree_attention()

    if prompts is not None:
        prompts = [list(map(int, p)) for p in prompts]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        n = len(prompts)
        lengths = [len(p) for p in prompts]
        pad = pad_token_id if pad_token_id is not None else int(eos_ids[0])
    else:
        if prefix_embeds.dim() != 3:
            raise ValueError(f"prefix_embeds must be [B, L, H], got {tuple(prefix_embeds.shape)}")
        n = prefix_embeds.shape[0]
        if prefix_attention_mask is None:
            prefix_attention_mask = torch.ones(prefix_embeds.shape[:2], dtype=torch.int64)
        prefix_attention_mask = prefix_attention_mask.to(torch.int64)
        if prefix_attention_mask.shape != prefix_embeds.shape[:2]:
            raise ValueError("prefix_attention_mask must be [B, L] like prefix_embeds")
        valid = prefix_attention_mask.bool()
        if not bool(valid[:, -1].all()) or bool((valid[:, 1:] < valid[:, :-1]).any()):
            raise ValueError("prefix_attention_mask must be left-padded (zeros, then ones up to the end)")
        lengths = prefix_attention_mask.sum(1).tolist()

    shared, n_shared = None, 0
    if share_prefix and n > 1:
        # Every prompt keeps at least one position of its own: its last gives the first logits.
        if prompts is not None:
            n_shared = min(_common_prefix_len(prompts), min(lengths) - 1)
        else:
            n_shared = min(_common_embed_prefix_len(prefix_embeds, lengths), min(lengths) - 1)
        if n_shared >= _MIN_SHARED_PREFIX:
            if prompts is not None:
                shared = _prefill_shared(model, device, keep_one, ids=prompts[0][:n_shared])
            else:
                start = prefix_embeds.shape[1] - lengths[0]
                shared = _prefill_shared(model, device, keep_one, embeds=prefix_embeds[0, start : start + n_shared])
        if shared is None:
            n_shared = 0
        elif counts is not None:
            counts.add_shared(n_shared)

    order = sorted(range(n), key=lambda i: -lengths[i]) if sort_by_length else list(range(n))
    results: list[list[Hypothesis]] = [[] for _ in range(n)]
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if prompts is not None:
            ids, mask = left_pad([prompts[i][n_shared:] for i in chunk], pad)
            ids, mask, embeds = ids.to(device), mask.to(device), None
        else:
            rows = torch.as_tensor(chunk, dtype=torch.int64)
            width = max(lengths[i] for i in chunk) - n_shared
            embeds = prefix_embeds[rows][:, -width:].to(device)
            # The rest after the shared prefix: a row's last (length - n_shared) positions.
            rest = torch.as_tensor([lengths[i] - n_shared for i in chunk], dtype=torch.int64)
            mask = (torch.arange(width)[None, :] >= width - rest[:, None]).to(torch.int64).to(device)
            ids = None
        out = _search_batch(
            model,
            trie,
            input_ids=ids,
            inputs_embeds=embeds,
            attention_mask=mask,
            num_beams=num_beams,
            num_return=num_return,
            length_penalty=length_penalty,
            max_new_tokens=max_new_tokens,
            eos_ids=eos_ids,
            keep_one=keep_one,
            kv_layout=kv_layout,
            shared=shared,
            counts=counts,
        )
        for i, hyps in zip(chunk, out):
            results[i] = hyps
    return results


def hypotheses_to_items(results: list[list[Hypothesis]], trie: TitleTrie) -> list[list[tuple[list[int], float]]]:
    """Replace each hypothesis's trie node by the catalog indices that end there (empty if none)."""
    return [[(trie.items(node), score) for node, score in hyps] for hyps in results]

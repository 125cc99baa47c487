"""Where the decoder keeps the keys/values of prompts and beams.

``tree`` (:class:`TreeLayout`): one cache row per prompt; every step appends the live beams' new tokens
as columns of that row, and a custom 4D mask lets each beam see the prompt and its own ancestors only.
``expand`` (:class:`ExpandLayout`): HF's layout, one row per live beam, gathered from the prompt's row
after the prefill and reordered every step; the fallback for attention implementations or caches the
tree layout does not handle (flash-attention, sliding windows, ...). Both give the same hypotheses.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from latentrec.llm.decoding.attention import Packing, tree_attention
from latentrec.llm.decoding.scores import HiddenScores, LogitScores, forward_last, plain_lm_head


class _BufferLayer(DynamicLayer):
    """Cache layer of the tree layout: one row per prompt in a zero-initialised buffer with spare room.

    A forward writes the keys/values of its packed tokens at their (row, column) in place (no torch.cat
    of the whole cache); columns never written stay zero, so a masked-out column is finite and cannot
    turn an attention row into NaN. The buffer is allocated at the first write (its head count and width
    come from the model)."""

    def __init__(self, rows: int, capacity: int, shared: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.rows, self.capacity, self.shared = rows, capacity, shared
        self.pack: Packing | None = None
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


class ExpandLayout:
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
        logits, self.cache = forward_last(
            self.model,
            self.keep_one,
            input_ids=tokens.reshape(-1)[flat_alive][:, None],
            attention_mask=mask,
            position_ids=(self.next_position[prompt_of_row] + step)[:, None],
            past_key_values=self.cache,
        )
        return LogitScores(logits)  # of the live beams, in (prompt, beam) order


def _expand_prefill(model, *, input_ids, inputs_embeds, attention_mask, keep_one, shared):
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
    logits, cache = forward_last(
        model,
        keep_one,
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask if has_padding else None,
        position_ids=position_ids,
        past_key_values=past,
    )
    return logits, cache, attention_mask, has_padding, next_position


class TreeLayout:
    """One KV row per prompt; every step appends the new tokens of the live beams as columns of that row.

    A beam's query attends to the prompt and to the columns of its own ancestors (a custom 4D mask), so
    the prompt's keys/values are stored once and never copied or reordered; beams that die simply
    stop being referenced. The model runs on real tokens only (:class:`Packing`): the prefill on each
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
        n_kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        self.group = text.num_attention_heads // n_kv_heads
        self.plain_head = plain_lm_head(model)
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

    def _run(self, pack: Packing, allowed: torch.Tensor, keep: torch.Tensor | None, **inputs):
        """The model on one packed sequence; the vocabulary scores of the tokens ``keep`` (all if None)."""
        for layer in self.cache.layers:
            layer.pack = pack
        kw = dict(
            **inputs,
            attention_mask=self._mask(allowed),
            past_key_values=self.cache,
            use_cache=True,
            return_dict=True,
            beam_pack=pack,
        )
        with tree_attention(self.model):
            if self.plain_head:  # the backbone here, the LM head slice by slice in HiddenScores
                hidden = self.model.get_decoder()(**kw).last_hidden_state[0]
                return HiddenScores(hidden if keep is None else hidden[keep], self.model.get_output_embeddings())
            if self.keep_one:
                logits = self.model(**kw, logits_to_keep=0 if keep is None else keep).logits[0]
            else:
                logits = self.model(**kw).logits[0]
                logits = logits if keep is None else logits[keep]
        return LogitScores(logits.to(dtype=torch.float32))

    def prefill(self, input_ids, inputs_embeds):
        """Each prompt's own tokens (after the shared prefix), packed; scores of each last token [B]."""
        real = self.prompt_mask[:, self._n_shared :]
        b, own = real.shape
        device = real.device
        rows, slots = torch.nonzero(real, as_tuple=True)  # row-major: a prompt's tokens in order
        pack = Packing(rows, slots, self._n_shared + slots, own)
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
        pack = Packing(p_idx, q_slot, self.cols + q_slot, m)
        scores = self._run(
            pack,
            allowed,
            None,
            input_ids=tokens[p_idx, b_idx][None],
            position_ids=(self.next_position[p_idx] + step)[None],
        )
        self.cols = cols
        return scores  # of the live beams, in (prompt, beam) order


def tree_supported(model) -> bool:
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


def start_layout(
    kv_layout: str, model, *, input_ids, inputs_embeds, attention_mask, num_beams, max_new_tokens, keep_one, shared
):
    """The layout (``"tree"`` or ``"expand"``) of one batch of left-padded prompts after its prefill, and the
    scores of each prompt's next token [B]. ``shared``: per layer the keys/values of the common prefix."""
    if kv_layout == "tree":
        layout = TreeLayout(
            model,
            prompt_mask=attention_mask,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            keep_one=keep_one,
            shared=shared,
        )
        return layout, layout.prefill(input_ids, inputs_embeds)
    logits, cache, row_mask, has_padding, next_position = _expand_prefill(
        model,
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        keep_one=keep_one,
        shared=shared,
    )
    layout = ExpandLayout(
        model,
        cache,
        prompt_mask=row_mask,
        has_padding=has_padding,
        next_position=next_position,
        num_beams=num_beams,
        keep_one=keep_one,
    )
    return layout, LogitScores(logits)

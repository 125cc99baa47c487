"""Latent reasoning: a head that writes latent tokens into the LLM's input-embedding space.

LatentR3 (docs/reference_code.md §3): after the prompt, the model "thinks" N latent tokens (N = 1 by default,
paper eq. 2-3 for N > 1). Latent n is a head's function of the backbone's final-norm hidden states of
everything before it (prompt and latents 1..n-1); it is fed back as the input embedding at the
`<|Thought|>` position; the LLM then predicts the item title from [prompt, latents].

Heads implement :class:`LatentHead` (LatentRATT here, FLR's factorised head in flr.py), so SFT, RL,
decoding and reports never fork on the head.

Refinement (FLR §4.1): with `refine_steps` T > 1 each latent slot is rewritten T times: the head's
output z_t is written at the slot, the LLM runs over it (the prompt's KV cache extended by that one
position, then cropped back), and the head recomputes z_{t+1} from the hidden states of
[prompt, z_t]. T = 1 is LatentR3's single computation.

Computation (docs/reference_code.md §7 items 3-5, exact-equivalent): the prompt is run ONCE through the backbone
(no LM head); its final-norm states feed the head and its KV cache serves the latent and target
positions, instead of the reference's two full passes. Gradients in SFT flow through that cache into
the LLM, which is the same total gradient as the reference's two passes. Prompts are LEFT-padded
(the last column is each row's last real token); positions count real tokens only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import DynamicCache

from latentrec.errors import InputError
from latentrec.extensions import SPEC_FORM, class_spec, import_class, is_class_spec
from latentrec.llm.backbone import load_backbone, resolve_model
from latentrec.llm.flr import FLRHead
from latentrec.llm.heads import LatentHead, rope
from latentrec.llm.precision import upcast, wide_einsum
from latentrec.llm.prompts import add_thought_token
from latentrec.llm.sft import SFTTask
from latentrec.llm.tensors import left_pad

HEAD_FILE = "latent_head.safetensors"
HEAD_CONFIG = "latent_head.json"
# Target tokens per vocabulary projection when a graph is kept: RL scores K copies of every title, and at a
# 152k vocabulary the fp32 logits and log-softmax of all of them would be ~1.2 MB a token (20 GB at K = 8
# and 16 samples of 104-token titles). Each piece keeps only its input and recomputes its logits in the
# backward (torch.utils.checkpoint): exact, for one more LM-head pass over the scored tokens.
LOGPROB_PIECE_TOKENS = 2048


def token_logprobs(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(lm_head(hidden))[targets] in fp32, [N] from hidden [N, d] and targets [N], computed
    LOGPROB_PIECE_TOKENS rows at a time (recomputed in the backward) when the result needs a gradient."""

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.gather(F.log_softmax(upcast(lm_head(h)), -1), 1, y[:, None])[:, 0]

    n = hidden.shape[0]
    if n <= LOGPROB_PIECE_TOKENS or not torch.is_grad_enabled():
        return piece(hidden, targets)
    step = LOGPROB_PIECE_TOKENS
    return torch.cat(
        [checkpoint(piece, hidden[i : i + step], targets[i : i + step], use_reentrant=False) for i in range(0, n, step)]
    )


# ------------------------------------------------------------------------------------------- heads
class LatentRATT(LatentHead):
    """LatentR3's attention layer: one head over the full width, Q/K/V with bias, RoPE (base 1000) on Q
    and K, scale 1/sqrt(d), the query at the last position, keys/values over every real position, no
    output projection, norm or residual; weights N(0, 0.02), biases 0."""

    kind = "latentratt"

    def __init__(self, hidden_size: int, rope_base: float = 1000.0, init_std: float = 0.02):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"RoPE needs an even hidden size, got {hidden_size}")
        self.hidden_size, self.rope_base, self.init_std = hidden_size, rope_base, init_std
        self.q, self.k, self.v = (nn.Linear(hidden_size, hidden_size) for _ in range(3))
        for lin in (self.q, self.k, self.v):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "rope_base": self.rope_base, "init_std": self.init_std}

    def forward(self, hidden, mask, positions, return_weights: bool = False):
        # Padding rows may hold anything (even NaN from fully masked attention): zero them.
        h = hidden.to(self.q.weight.dtype).masked_fill(mask[..., None] == 0, 0)
        q = rope(self.q(h[:, -1]), positions[:, -1], self.rope_base)  # [B, d]
        k = rope(self.k(h), positions, self.rope_base)  # [B, L, d]
        scores = wide_einsum("bd,bld->bl", q, k) / math.sqrt(self.hidden_size)
        weights = scores.masked_fill(mask == 0, float("-inf")).softmax(-1)
        out = torch.einsum("bl,bld->bd", weights.to(h.dtype), self.v(h))
        return (out, weights) if return_weights else out


class LastHiddenHead(LatentHead):
    """The "w/o LatentRATT" ablation: the last hidden state itself is the latent (no parameters)."""

    kind = "last_hidden"

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size}

    def forward(self, hidden, mask, positions):
        return hidden[:, -1]


# The one registry of heads (config `head:` / saved `kind` -> class); FLR's head lives in flr.py. A head of
# one's own needs no entry: `head: module:Class` names it (latentrec/extensions.py; docs/extending.md).
HEADS: dict[str, type[LatentHead]] = {cls.kind: cls for cls in (LatentRATT, LastHiddenHead, FLRHead)}


def head_class(kind: str) -> type[LatentHead]:
    """The class of a registered head name, or of a `module:Class` name (imported here)."""
    if is_class_spec(kind):
        return import_class(kind, LatentHead, "latent head")
    if kind not in HEADS:
        raise InputError(f"unknown latent head {kind!r}; known: {sorted(HEADS)}, or {SPEC_FORM}")
    return HEADS[kind]


def head_name(head: LatentHead) -> str:
    """What a saved model records, so that loading builds the same class: its registry name, else `module:Class`."""
    cls = type(head)
    return cls.kind if HEADS.get(cls.kind) is cls else class_spec(cls)


def build_head(kind: str, hidden_size: int, **options) -> LatentHead:
    return head_class(kind)(hidden_size=hidden_size, **options)


# ----------------------------------------------------------------------------------- the reasoner
@dataclass
class SeqState:
    """Backbone states of a left-padded batch: final-norm hidden [B, L, d], mask, positions, KV cache.

    ``group`` > 1: a state of ``B = P * group`` rows whose KV cache holds ONE row per prompt (rows
    ``p*group .. p*group+group-1`` are copies of prompt ``p``): the copies' own later positions are
    appended as extra columns of their prompt's cache row and a 4D mask lets each copy see the prompt
    and its own columns only (``own`` [group, c]: the columns of each copy; ``prompt_cols``: the prompt's).
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    cache: DynamicCache = field(repr=False)
    group: int = 1
    prompt_cols: int = 0
    own: torch.Tensor | None = field(default=None, repr=False)

    def repeat(self, n: int, share_cache: bool = False) -> "SeqState":
        """Each row n times (rows r*n .. r*n+n-1 copy row r), with a fresh cache (the original stays).
        ``share_cache``: the new cache holds the prompt's keys/values once (views, no copy; a grouped
        state); else each row's keys/values are copied n times (HF's layout)."""
        rep = (lambda t: t) if n == 1 else (lambda t: t.repeat_interleave(n, dim=0))  # noqa: E731
        if share_cache and n > 1 and self.group == 1:
            cache = _copy_cache(self.cache, 1)
            own = torch.empty((n, 0), dtype=torch.int64, device=self.mask.device)
            return SeqState(rep(self.hidden), rep(self.mask), rep(self.positions), cache, n, self.mask.shape[1], own)
        if self.group > 1:
            raise ValueError("cannot repeat a grouped state")
        return SeqState(rep(self.hidden), rep(self.mask), rep(self.positions), _copy_cache(self.cache, n))


def _copy_cache(cache: DynamicCache, n: int) -> DynamicCache:
    if n == 1:
        # A new cache over the same tensors: DynamicLayer.update concatenates into new tensors (never
        # writes in place), so the original stays; DynamicCache(ddp_cache_data=...) would copy them.
        out = DynamicCache(ddp_cache_data=[(None, None)] * len(cache.layers))
        for new, old in zip(out.layers, cache.layers):
            new.lazy_initialization(old.keys, old.values)
            new.keys, new.values = old.keys, old.values
        return out
    return DynamicCache(
        ddp_cache_data=[
            (layer.keys.repeat_interleave(n, 0), layer.values.repeat_interleave(n, 0)) for layer in cache.layers
        ]
    )


def _can_share_cache(llm, cache: DynamicCache) -> bool:
    """The grouped layout needs plain full attention (sdpa/eager) over a plain dynamic cache."""
    from transformers.cache_utils import DynamicLayer

    impl = getattr(llm.config, "_attn_implementation", None)
    layers = getattr(cache, "layers", None)
    return (
        impl in ("sdpa", "eager")
        and bool(layers)
        and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)
    )


def left_positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def greedy_spells(trie, logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Whether a greedy catalog-constrained decode would spell each row's target [R] (bool), from the
    teacher-forced logits [R, T, V] along the target: greedy decoding is deterministic, so it returns the
    target exactly when, at every target prefix, the target token is the argmax among the tokens the trie
    allows there (and the target is a whole catalog title). No decode is run; a decode is only needed to
    learn WHICH title a miss would return, and the reward does not use it."""
    trie = trie.to(target_ids.device)
    nodes = torch.zeros(target_ids.shape[0], dtype=torch.long, device=target_ids.device)
    ok = torch.ones(target_ids.shape[0], dtype=torch.bool, device=target_ids.device)
    for t in range(target_ids.shape[1]):
        real = target_mask[:, t] > 0
        best = trie.constrain(logits[:, t], nodes).argmax(-1)
        ok &= ~real | (best == target_ids[:, t])
        nodes = torch.where(real, trie.advance(nodes, target_ids[:, t]), nodes)
    return ok & (nodes >= 0) & trie.is_terminal[nodes.clamp(min=0)]


class LatentReasoner(nn.Module):
    """An HF causal LM plus a latent head that thinks `n_latents` tokens before the answer, each
    refined `refine_steps` times (FLR's T; 1 = LatentR3).

    ``forward`` (what the trainers call, so DDP sees every parameter use) returns the per-token
    log-probabilities of the targets given [prompt, latents], for ``copies`` latent draws per prompt
    with optional additive ``noise`` [B, copies, N, d] on the latents.
    """

    def __init__(self, llm, head: LatentHead, n_latents: int = 1, refine_steps: int = 1):
        super().__init__()
        if n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {n_latents}")
        if refine_steps < 1:
            raise ValueError(f"refine_steps must be >= 1, got {refine_steps}")
        self.llm, self.head, self.n_latents, self.refine_steps = llm, head, n_latents, refine_steps
        # RL's K copies of a prompt read ONE copy of its KV cache (grouped SeqState); False: the
        # prompt's keys/values are copied K times (HF's layout; the benchmark's baseline).
        self.share_prompt_kv = True

    # -- pieces ------------------------------------------------------------------------------------
    @property
    def backbone(self):
        return self.llm.get_decoder()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def _run(self, embeds, mask, positions, cache) -> torch.Tensor:
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        return out.last_hidden_state

    def encode_prompt(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> SeqState:
        """One backbone pass over left-padded prompts (no LM head)."""
        if not bool(prompt_mask[:, -1].all()):
            raise ValueError("prompts must be left-padded (the last column a real token in every row)")
        positions = left_positions(prompt_mask)
        cache = DynamicCache()
        hidden = self._run(self.embed(prompt_ids), prompt_mask, positions, cache)
        return SeqState(hidden, prompt_mask, positions, cache)

    def extend(self, state: SeqState, embeds: torch.Tensor) -> SeqState:
        """Append input embeddings [B, t, d] to a sequence state (its cache grows in place)."""
        t = embeds.shape[1]
        pos = state.positions[:, -1:] + 1 + torch.arange(t, device=embeds.device)
        mask = torch.cat((state.mask, state.mask.new_ones((embeds.shape[0], t))), 1)
        if state.group > 1:
            hidden, own = self._run_grouped(state, embeds, pos)
            return SeqState(
                torch.cat((state.hidden, hidden), 1),
                mask,
                torch.cat((state.positions, pos), 1),
                state.cache,
                state.group,
                state.prompt_cols,
                own,
            )
        hidden = self._run(embeds, mask, pos, state.cache)
        return SeqState(torch.cat((state.hidden, hidden), 1), mask, torch.cat((state.positions, pos), 1), state.cache)

    def _run_grouped(self, state: SeqState, embeds: torch.Tensor, pos: torch.Tensor):
        """The new positions [P*g, t] of a grouped state as ONE row per prompt of g*t columns (copy j's
        tokens at columns c0 + j*t ..); a copy's query sees its prompt's real columns, its own earlier
        columns and its own new tokens up to itself. Returns (hidden [P*g, t, d], own columns [g, c + t])."""
        from latentrec.llm.decoding import tree_attention

        g, (bg, t, d) = state.group, embeds.shape
        p, dev = bg // g, embeds.device
        c0 = state.cache.get_seq_length()
        new = c0 + torch.arange(g * t, device=dev).view(g, t)
        own = torch.cat((state.own, new), 1)
        # Columns after the prompt's, one pattern for every prompt: [g, t, c0 + g*t - prompt_cols].
        pc = state.prompt_cols
        tail = torch.zeros((g, t, c0 + g * t - pc), dtype=torch.bool, device=dev)
        if state.own.numel():
            tail.scatter_(2, (state.own - pc)[:, None, :].expand(g, t, -1), True)
        eye = torch.eye(g, dtype=torch.bool, device=dev)
        causal = torch.ones((t, t), dtype=torch.bool, device=dev).tril()
        tail[:, :, c0 - pc :] = (eye[:, None, :, None] & causal[None, :, None, :]).reshape(g, t, g * t)
        prompt = state.mask[::g, :pc].bool()[:, None, None, :].expand(p, g, t, -1)
        allowed = torch.cat((prompt, tail[None].expand(p, -1, -1, -1)), 3).reshape(p, 1, g * t, -1)
        dtype = embeds.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
        with tree_attention(self.llm):
            hidden = self._run(embeds.reshape(p, g * t, d), mask, pos.reshape(p, g * t), state.cache)
        return hidden.reshape(bg, t, d), own

    def latent(self, state: SeqState, head: LatentHead) -> torch.Tensor:
        """The next latent [B, d] after `state`, refined `refine_steps` times: each refinement writes the
        current latent at the next position (the cache grows by one), reruns the head over the hidden
        states of [state, latent], and crops the cache back. `state` is left as it was."""
        emb_dtype = self.llm.get_input_embeddings().weight.dtype
        z = head(state.hidden, state.mask, state.positions)
        cols = state.cache.get_seq_length()
        for _ in range(self.refine_steps - 1):
            ext = self.extend(state, z.to(emb_dtype)[:, None])
            z = head(ext.hidden, ext.mask, ext.positions)
            state.cache.crop(
                cols - state.cache.get_seq_length()
            )  # drop the slot(s) again: the next refinement (or the caller) rewrites them
        return z

    def think(self, state: SeqState, copies: int = 1, noise: torch.Tensor | None = None, head=None):
        """(latents [B*copies, N, d] in the embedding dtype, state over prompt + latents[:-1]).

        The first latent (all its refinements) is computed once per prompt and shared by its copies;
        noise [B, copies, N, d] is added to each latent as it is written (after its last refinement),
        so later latents see the noisy earlier ones.
        """
        emb_dtype = self.llm.get_input_embeddings().weight.dtype
        head = head or self.head
        head.reset()
        z = self.latent(state, head)
        state = state.repeat(copies, share_cache=self.share_prompt_kv and _can_share_cache(self.llm, state.cache))
        z = z.repeat_interleave(copies, 0)
        flat_noise = None if noise is None else noise.reshape(-1, *noise.shape[2:])
        latents = []
        for n in range(self.n_latents):
            if n:
                z = self.latent(state, head)
            z = z.to(emb_dtype)
            if flat_noise is not None:
                z = z + flat_noise[:, n].to(emb_dtype)
            latents.append(z)
            if n < self.n_latents - 1:
                state = self.extend(state, z[:, None])
        return torch.stack(latents, 1), state

    def target_logprobs(
        self,
        state: SeqState,
        last_latent: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor,
        return_logits: bool = False,
    ):
        """log p(target_t | prompt, latents, target_<t) [B, T] (fp32; 0 on padding). Uses up `state`.
        ``return_logits`` also returns the teacher-forced logits [B, T, V] (fp32)."""
        inputs = torch.cat((last_latent[:, None], self.embed(target_ids[:, :-1])), 1)
        ext = self.extend(state, inputs)
        t = target_ids.shape[1]
        # 2D input: a sliced [B, T, d] view would make F.linear a bmm against a broadcast copy of the
        # vocabulary matrix (~10x slower on CPU).
        hidden = ext.hidden[:, -t:].reshape(-1, ext.hidden.shape[-1])
        lm_head = self.llm.get_output_embeddings()
        if not return_logits:
            return token_logprobs(lm_head, hidden, target_ids.reshape(-1)).view(target_ids.shape) * target_mask
        logits = upcast(lm_head(hidden)).view(target_ids.shape[0], t, -1)
        logp = torch.gather(F.log_softmax(logits, -1), 2, target_ids[:, :, None])[:, :, 0] * target_mask
        return logp, logits

    # -- what trainers call --------------------------------------------------------------------------
    def forward(
        self,
        prompt_ids,
        prompt_mask,
        target_ids,
        target_mask,
        copies: int = 1,
        noise=None,
        frozen_llm: bool = False,
        head: LatentHead | None = None,
        return_latents: bool = False,
        match_trie=None,
    ):
        """Per-token target log-probs [B*copies, T]; targets are [B, T] (shared by a prompt's copies) or
        [B*copies, T] (one per copy: decoded completions). ``frozen_llm``: the prompt pass runs without
        gradient (RL: only the head trains), so only the head and latent positions build a graph;
        ``head`` overrides the model's head (the KL reference); ``return_latents`` also returns the
        noise-free latents [B*copies, N, d] (for the Gaussian-policy ratio); ``match_trie`` (a
        :class:`~latentrec.llm.trie.TitleTrie`) also returns, last, whether a greedy catalog-constrained
        decode after each row's (noisy) latents spells its target [B*copies] (FLR-GRPO's exact-match
        reward), read off the teacher-forced logits this forward computes anyway (:func:`greedy_spells`)."""
        if frozen_llm:
            with torch.no_grad():
                state = self.encode_prompt(prompt_ids, prompt_mask)
        else:
            state = self.encode_prompt(prompt_ids, prompt_mask)
        latents, state = self.think(state, copies, noise, head)
        rep = lambda t: t.repeat_interleave(copies, 0)  # noqa: E731
        if target_ids.shape[0] != latents.shape[0]:  # one target per prompt, shared by its copies
            target_ids, target_mask = rep(target_ids), rep(target_mask)
        if match_trie is None:
            logp = self.target_logprobs(state, latents[:, -1], target_ids, target_mask)
        else:
            logp, logits = self.target_logprobs(state, latents[:, -1], target_ids, target_mask, return_logits=True)
            hits = greedy_spells(match_trie, logits.detach(), target_ids, target_mask)
        out = [logp]
        if return_latents:
            out.append(latents if noise is None else latents - noise.reshape(latents.shape).to(latents.dtype))
        if match_trie is not None:
            out.append(hits)
        return out[0] if len(out) == 1 else tuple(out)

    @torch.no_grad()
    def prefix_embeds(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
        """Left-padded [prompt, latents] input embeddings and mask for decoding (latents once per user)."""
        latents, _ = self.think(self.encode_prompt(prompt_ids, prompt_mask))
        embeds = torch.cat((self.embed(prompt_ids), latents), 1)
        mask = torch.cat((prompt_mask, prompt_mask.new_ones(latents.shape[:2])), 1)
        return embeds, mask

    # -- slow, obviously-correct restatement (tests and bench) ---------------------------------------
    def reference_logprobs(
        self, prompt: list[int], target: list[int], noise: torch.Tensor | None = None, return_prefix: bool = False
    ):
        """One prompt, no cache, no padding: every latent from a full pass over [prompt, latents so far]
        (each refinement from a full pass over [prompt, latents so far, current latent]), then a full
        pass over [prompt, latents, target]. noise [N, d] -> [T]; or [K, N, d] -> [K, T] (K copies of
        the whole computation, as the reference's K-row batches). ``return_prefix`` also returns the
        [prompt, noisy latents] input embeddings [K, L + N, d] (what a decode would start from)."""
        dev = self.llm.get_input_embeddings().weight.device
        single = noise is None or noise.dim() == 2
        noise = (None if noise is None else noise[None]) if single else noise
        k = 1 if noise is None else noise.shape[0]
        emb = self.embed(torch.tensor([prompt], device=dev)).expand(k, -1, -1)
        self.head.reset()
        for n in range(self.n_latents):
            seq = emb
            for _ in range(self.refine_steps):
                pos = torch.arange(seq.shape[1], device=dev).expand(k, -1)
                hidden = self.backbone(inputs_embeds=seq, position_ids=pos).last_hidden_state
                z = self.head(hidden, torch.ones_like(pos), pos).to(emb.dtype)
                seq = torch.cat((emb, z[:, None]), 1)
            if noise is not None:
                z = z + noise[:, n].to(emb.dtype)
            emb = torch.cat((emb, z[:, None]), 1)
        prefix = emb
        tgt = torch.tensor([target], device=dev).expand(k, -1)
        emb = torch.cat((emb, self.embed(tgt[:, :-1])), 1)
        pos = torch.arange(emb.shape[1], device=dev).expand(k, -1)
        hidden = self.backbone(inputs_embeds=emb, position_ids=pos).last_hidden_state
        logits = upcast(self.llm.get_output_embeddings()(hidden[:, -len(target) :]))
        logp = torch.gather(F.log_softmax(logits, -1), 2, tgt[:, :, None])[:, :, 0]
        logp = logp[0] if single else logp
        return (logp, prefix) if return_prefix else logp

    # -- persistence --------------------------------------------------------------------------------
    def save(self, out_dir: str | Path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        out = Path(out_dir)
        self.llm.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, str(out / HEAD_FILE))
        (out / HEAD_CONFIG).write_text(
            json.dumps(
                {
                    "kind": head_name(self.head),
                    "options": self.head.config(),
                    "n_latents": self.n_latents,
                    "refine_steps": self.refine_steps,
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, folder: str | Path, dtype=None, device=None, n_latents: int | None = None):
        """(reasoner, tokenizer) from a folder written by :meth:`save`."""
        from latentrec.io_utils import load_safetensors

        folder = Path(folder)
        if not (folder / HEAD_CONFIG).exists():
            raise InputError(f"{folder}: no {HEAD_CONFIG}; not a latent-reasoning model (train it with `latent-sft`)")
        spec = json.loads((folder / HEAD_CONFIG).read_text())
        llm, tok = load_backbone(folder, dtype=dtype)
        head = build_head(spec["kind"], **spec["options"])
        head.load_state_dict(load_safetensors(folder / HEAD_FILE))
        model = cls(llm, head, n_latents or spec["n_latents"], spec.get("refine_steps", 1))
        if device is not None:
            model.to(device)
        return model, tok


def load_decodable(path: str | Path, dtype=None, device=None):
    """(model, tokenizer) for decoding: a LatentReasoner where the folder has a latent head, else the
    plain backbone. ``path`` may be a selection file naming the folder (select-latent)."""
    folder = resolve_model(path)
    if (folder / HEAD_CONFIG).exists():
        return LatentReasoner.load(folder, dtype=dtype, device=device)
    return load_backbone(folder, dtype=dtype, device=device)


def new_reasoner(
    llm,
    tokenizer,
    head: str = "latentratt",
    n_latents: int = 1,
    head_options: dict | None = None,
    seed: int = 0,
    refine_steps: int = 1,
) -> LatentReasoner:
    """Add `<|Thought|>` to the tokenizer and LLM, and a freshly initialised head (seeded)."""
    add_thought_token(tokenizer, llm)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        h = build_head(head, llm.config.hidden_size, **(head_options or {}))
    return LatentReasoner(llm, h, n_latents, refine_steps)


# --------------------------------------------------------------------------------------- training
def collate_prompt_target(samples, pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts and right-padded targets (the split a latent model needs)."""
    prompts = [s.input_ids[: s.prompt_len] for s in samples]
    targets = [s.input_ids[s.prompt_len :] for s in samples]
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    t = max(len(x) for x in targets)
    target_ids = torch.full((len(samples), t), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(samples), t))
    for i, x in enumerate(targets):
        target_ids[i, : len(x)] = torch.tensor(x)
        target_mask[i, : len(x)] = 1
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "target_ids": target_ids, "target_mask": target_mask}


class LatentSFTTask(SFTTask):
    """Warm-up SFT with the latent in the loop: the whole model (LLM and head) trains on the target CE;
    a head's regularisers (FLR eq. 8) are added with their learned weights, scaled per target token, in
    training only: the validation loss that picks the kept epoch is the target CE alone (the learned
    weights and their s/2 terms would make it incomparable across epochs)."""

    # The head reads each prompt as its own left-padded row (the query at its last position, keys over
    # its prompt only): one packed row would need per-sample head calls; padded rows are kept.
    supports_packing = False

    def collate(self, samples, pad_id):
        return collate_prompt_target(samples, pad_id)

    def count_tokens(self, batch) -> int:
        return int(batch["prompt_mask"].sum() + batch["target_mask"].sum())

    def loss_sum(self, model, batch):
        logp = model(**batch)
        n = int(batch["target_mask"].sum())
        loss = -logp.sum()
        inner = getattr(model, "module", model)
        reg = inner.head.regularisers() if inner.training else {}
        if reg:
            loss = loss + n * sum(reg.values())
        return loss, n

    def save(self, model, tokenizer, out_dir: Path) -> None:
        model.save(out_dir, tokenizer)

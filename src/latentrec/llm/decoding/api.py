"""The decoder's entry point: :func:`constrained_beam_search` over token-id prompts or an embedding prefix,
and :class:`DecodeConfig`, the decode settings of a method (the ``decode`` block of its config)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch

from latentrec.checks import check_options
from latentrec.llm.decoding.beams import Beams, Hypothesis, advance, candidates, collect
from latentrec.llm.decoding.counts import DecodeCounts
from latentrec.llm.decoding.layouts import start_layout, tree_supported
from latentrec.llm.decoding.prefix import MIN_SHARED_PREFIX, common_embed_prefix_len, common_prefix_len, prefill_shared
from latentrec.llm.decoding.scores import supports_logits_to_keep
from latentrec.llm.prompts import STYLES
from latentrec.llm.tensors import left_pad
from latentrec.llm.trie import TitleTrie

KV_LAYOUTS = ("auto", "tree", "expand")


@dataclass
class DecodeConfig:
    """How a method decodes its titles; every key of a method's ``decode`` block, with its default."""

    num_beams: int = field(default=10, metadata={"help": "beams per prompt"})
    num_return: int = field(default=10, metadata={"help": "hypotheses kept per prompt, best first (at most num_beams)"})
    length_penalty: float = field(
        default=1.0,
        metadata={
            "help": "score = summed log-prob / generated length ** length_penalty: 1 = BIGRec (mean per token), "
            "0 = D3 (summed log-prob)"
        },
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "most tokens generated per title; null: the longest catalogue title in tokens (with its closing "
            "EOS), so no target is cut"
        },
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "prompts decoded together, each with num_beams beams (the latents and CoT reasoning of a latent or "
            "CoT method are computed per batch too)"
        },
    )
    prompt_style: str = field(default="reference", metadata={"help": "the prompt template (latentrec.llm.prompts)"})
    cot: dict | None = field(
        default=None,
        metadata={
            "help": "CoT baseline: greedy text reasoning before the constrained title (options of "
            "latentrec.llm.cot.CoTConfig); null: none"
        },
    )

    @classmethod
    def from_dict(cls, d: dict | None) -> DecodeConfig:
        """Checked before anything decodes: known fields, each of its annotated type, in range.
        Raises ValueError "<field>: must be <allowed>, got <value>" (validate_config prefixes the key path)."""
        d = check_options(
            cls,
            d,
            "decode",
            at_least={"num_beams": 1, "num_return": 1, "max_new_tokens": 1, "batch_size": 1},
            choices={"prompt_style": tuple(STYLES)},
        )
        cfg = cls(**d)
        if cfg.num_return > cfg.num_beams:
            raise ValueError(
                f"num_return: must be at most num_beams ({cfg.num_beams}): beam search returns at most "
                f"one title per beam, got {cfg.num_return}"
            )
        if cfg.cot is not None:
            from latentrec.llm.cot import CoTConfig

            if not isinstance(cfg.cot, dict):
                raise ValueError(f"cot: must be a mapping of CoT options or null, got {cfg.cot!r}")
            try:
                CoTConfig.from_dict(cfg.cot)
            except (ValueError, TypeError) as err:
                raise ValueError(f"cot: {err}") from None
        return cfg

    def search_options(self) -> dict:
        """The keyword arguments of :func:`constrained_beam_search` this config sets (not the batch size:
        the caller cuts its prompts into batches)."""
        return {
            "num_beams": self.num_beams,
            "num_return": self.num_return,
            "length_penalty": self.length_penalty,
            "max_new_tokens": self.max_new_tokens,
        }

    def record(self) -> dict:
        """The settings as a run records them (``generation_config``): the fields, ``do_sample`` (always
        false: the search is deterministic), and ``cot`` where set."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cot"}
        out["do_sample"] = False
        if self.cot is not None:
            out["cot"] = self.cot
        return out


@torch.inference_mode()
def constrained_beam_search(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]] | None,
    trie: TitleTrie,
    *,
    prefix_embeds: torch.Tensor | None = None,
    prefix_attention_mask: torch.Tensor | None = None,
    num_beams: int = DecodeConfig.num_beams,
    num_return: int = DecodeConfig.num_return,
    length_penalty: float = DecodeConfig.length_penalty,
    max_new_tokens: int | None = DecodeConfig.max_new_tokens,
    batch_size: int | None = None,
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
    terminal can only come from a sequence cut at ``max_new_tokens``, as in HF; None: the trie's depth,
    so no sequence is cut). Scores are ``sum(logprob) / len ** length_penalty`` (1.0 = BIGRec, 0.0 = D3);
    lists are sorted best first and hold at most ``num_return`` entries (:class:`DecodeConfig` has the
    defaults). All prompts are decoded together (each with ``num_beams`` beams) unless ``batch_size``
    cuts them into batches; ``sort_by_length`` groups prompts of similar length to save padding.
    ``kv_layout``: ``"tree"``, ``"expand"`` or ``"auto"`` (tree for sdpa/eager attention with a plain
    dynamic cache, else expand); both give the same hypotheses. ``share_prefix``: prefill the token prefix
    common to all ``prompts`` once and reuse its keys/values for every prompt (same hypotheses,
    scores equal up to float rounding; the embeddings path shares the prefix whose input embeddings are
    identical in every row). ``counts``: a :class:`DecodeCounts` to add this call's tokens to (the FLOP
    floor of a benchmark). The caller puts the model in eval mode.
    """
    _check_arguments(num_beams, num_return, max_new_tokens, batch_size, kv_layout, prompts, prefix_embeds)
    device = next(model.parameters()).device
    eos_ids = torch.tensor(_as_id_list(eos_token_id), dtype=torch.int64, device=device)
    if prompts is not None:
        source = _TokenPrompts(prompts, pad_token_id if pad_token_id is not None else int(eos_ids[0]))
    else:
        source = _EmbeddedPrompts(prefix_embeds, prefix_attention_mask)
    keep_one = supports_logits_to_keep(model)
    shared, n_shared = _shared_prefix(model, source, device, keep_one) if share_prefix else (None, 0)
    if shared is not None and counts is not None:
        counts.add_shared(n_shared)
    search = _Search(
        model,
        trie.to(device),
        num_beams=num_beams,
        num_return=num_return,
        length_penalty=length_penalty,
        max_new_tokens=trie.max_depth if max_new_tokens is None else max_new_tokens,
        eos_ids=eos_ids,
        keep_one=keep_one,
        kv_layout=_resolve_layout(kv_layout, model),
        shared=shared,
        counts=counts,
    )
    n = len(source.lengths)
    order = sorted(range(n), key=lambda i: -source.lengths[i]) if sort_by_length else list(range(n))
    size = batch_size or max(n, 1)
    results: list[list[Hypothesis]] = [[] for _ in range(n)]
    for start in range(0, n, size):
        chunk = order[start : start + size]
        for i, hyps in zip(chunk, search.run(*source.batch(chunk, n_shared, device))):
            results[i] = hyps
    return results


def hypotheses_to_items(results: list[list[Hypothesis]], trie: TitleTrie) -> list[list[tuple[list[int], float]]]:
    """Replace each hypothesis's trie node by the catalog indices that end there (empty if none)."""
    return [[(trie.items(node), score) for node, score in hyps] for hyps in results]


def _check_arguments(num_beams, num_return, max_new_tokens, batch_size, kv_layout, prompts, prefix_embeds) -> None:
    if num_beams < 1 or not 1 <= num_return <= num_beams:
        raise ValueError(f"need 1 <= num_return ({num_return}) <= num_beams ({num_beams})")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if kv_layout not in KV_LAYOUTS:
        raise ValueError(f"kv_layout must be 'auto', 'tree' or 'expand', got {kv_layout!r}")
    if (prompts is None) == (prefix_embeds is None):
        raise ValueError("give exactly one of `prompts` (token ids) and `prefix_embeds`")


def _as_id_list(eos_token_id: int | Sequence[int]) -> list[int]:
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    ids = [int(t) for t in eos_token_id]
    if not ids:
        raise ValueError("eos_token_id must name at least one token")
    return ids


def _resolve_layout(kv_layout: str, model) -> str:
    if kv_layout == "auto":
        return "tree" if tree_supported(model) else "expand"
    return kv_layout


class _TokenPrompts:
    """Prompts given as token-id lists; a batch is their rest after the shared prefix, left-padded."""

    def __init__(self, prompts: Sequence[Sequence[int]], pad_token_id: int):
        self.prompts = [list(map(int, p)) for p in prompts]
        if any(len(p) == 0 for p in self.prompts):
            raise ValueError("empty prompt")
        self.lengths = [len(p) for p in self.prompts]
        self.pad = pad_token_id

    def common_prefix_len(self) -> int:
        return common_prefix_len(self.prompts)

    def prefill_prefix(self, model, device, keep_one: bool, n_shared: int):
        return prefill_shared(model, device, keep_one, ids=self.prompts[0][:n_shared])

    def batch(self, chunk: list[int], n_shared: int, device):
        """(input ids, input embeddings, mask) of the prompts ``chunk``: ids here, no embeddings."""
        ids, mask = left_pad([self.prompts[i][n_shared:] for i in chunk], self.pad)
        return ids.to(device), None, mask.to(device)


class _EmbeddedPrompts:
    """Prompts given as a left-padded embedding prefix [B, L, H] (what a latent-reasoning head feeds)."""

    def __init__(self, embeds: torch.Tensor, mask: torch.Tensor | None):
        if embeds.dim() != 3:
            raise ValueError(f"prefix_embeds must be [B, L, H], got {tuple(embeds.shape)}")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.int64)
        mask = mask.to(torch.int64)
        if mask.shape != embeds.shape[:2]:
            raise ValueError("prefix_attention_mask must be [B, L] like prefix_embeds")
        valid = mask.bool()
        if not bool(valid[:, -1].all()) or bool((valid[:, 1:] < valid[:, :-1]).any()):
            raise ValueError("prefix_attention_mask must be left-padded (zeros, then ones up to the end)")
        self.embeds = embeds
        self.lengths = mask.sum(1).tolist()

    def common_prefix_len(self) -> int:
        return common_embed_prefix_len(self.embeds, self.lengths)

    def prefill_prefix(self, model, device, keep_one: bool, n_shared: int):
        start = self.embeds.shape[1] - self.lengths[0]
        return prefill_shared(model, device, keep_one, embeds=self.embeds[0, start : start + n_shared])

    def batch(self, chunk: list[int], n_shared: int, device):
        """(input ids, input embeddings, mask) of the prompts ``chunk``: embeddings here, no ids."""
        rows = torch.as_tensor(chunk, dtype=torch.int64)
        width = max(self.lengths[i] for i in chunk) - n_shared
        embeds = self.embeds[rows][:, -width:].to(device)
        # The rest after the shared prefix: a row's last (length - n_shared) positions.
        rest = torch.as_tensor([self.lengths[i] - n_shared for i in chunk], dtype=torch.int64)
        mask = (torch.arange(width)[None, :] >= width - rest[:, None]).to(torch.int64).to(device)
        return None, embeds, mask


def _shared_prefix(model, source, device, keep_one: bool):
    """(per layer the keys/values of the prefix all prompts share, its length), or (None, 0) where it is
    too short to pay for its own prefill or the cache cannot take it."""
    if len(source.lengths) < 2:
        return None, 0
    # Every prompt keeps at least one position of its own: its last gives the first logits.
    n_shared = min(source.common_prefix_len(), min(source.lengths) - 1)
    if n_shared < MIN_SHARED_PREFIX:
        return None, 0
    shared = source.prefill_prefix(model, device, keep_one, n_shared)
    return (None, 0) if shared is None else (shared, n_shared)


@dataclass
class _Search:
    """One call's search settings, applied to each batch of prompts in turn."""

    model: torch.nn.Module
    trie: TitleTrie
    num_beams: int
    num_return: int
    length_penalty: float
    max_new_tokens: int
    eos_ids: torch.Tensor
    keep_one: bool
    kv_layout: str
    shared: list[tuple[torch.Tensor, torch.Tensor]] | None
    counts: DecodeCounts | None

    def run(self, input_ids, inputs_embeds, attention_mask: torch.Tensor) -> list[list[Hypothesis]]:
        """Beam search for one left-padded batch of prompts (mask [B, L], 1 = real token).

        With ``shared`` (per layer the keys/values [1, H, P, D] of a prefix common to all prompts), the inputs
        hold the rest of each prompt, left-padded; the cache row of a prompt is then ``[shared prefix |
        padding | rest]`` with positions ``0..len-1`` over its real tokens.
        """
        device = attention_mask.device
        b, k = attention_mask.shape[0], self.num_beams
        n_keep = max(2, 1 + self.eos_ids.numel()) * k  # HF's `beams_to_keep`
        top_rank = torch.arange(n_keep, device=device) < k  # HF's `top_num_beam_mask`
        layout, vocab = start_layout(
            self.kv_layout,
            self.model,
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            num_beams=k,
            max_new_tokens=self.max_new_tokens,
            keep_one=self.keep_one,
            shared=self.shared,
        )
        beams = Beams(b, k, device)
        live = torch.arange(b, device=device) * k  # flat index prompt * k + beam of each row of `vocab`
        prompt_len = self._count_prompts(attention_mask)
        results: list[list[Hypothesis]] = [[] for _ in range(b)]
        for step in range(self.max_new_tokens):
            cands = candidates(vocab, live, beams, self.trie, k, n_keep)
            src_beam, next_tok, alive, done = advance(
                beams,
                cands,
                step=step,
                last_step=step + 1 >= self.max_new_tokens,
                eos_ids=self.eos_ids,
                length_penalty=self.length_penalty,
                top_rank=top_rank,
            )
            if bool(done.any()):  # a finished prompt leaves the batch at once (its result is final)
                collect(beams, torch.nonzero(done).flatten().tolist(), results, self.num_return)
                stay = torch.nonzero(~done).flatten()
                if stay.numel() == 0:
                    break
                beams.select(stay)
                src_beam, next_tok, alive = src_beam[stay], next_tok[stay], alive[stay]
                layout.select_prompts(stay)
            vocab = layout.forward(src_beam, next_tok, alive, step)
            live = torch.nonzero(alive.reshape(-1)).flatten()
            if self.counts is not None:  # a beam token of step s attends to its prompt and s + 1 generated tokens
                self.counts.add_beams(prompt_len[beams.active[live // k]] + step + 1)
        return results

    def _count_prompts(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Add the batch's prompt tokens to ``counts``; each prompt's length (shared prefix included)."""
        if self.counts is None:
            return None
        n_shared = 0 if self.shared is None else self.shared[0][0].shape[2]
        self.counts.add_prompts(attention_mask, n_shared)
        return n_shared + attention_mask.sum(1)

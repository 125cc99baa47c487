"""The CoT baseline of FLR Table 2 and Figure 9: reason in text first, then name a catalog title.

For each user the backbone reads the recommendation prompt followed by a reasoning cue, writes up to
``max_reasoning_tokens`` tokens greedily (no constraint; it stops earlier at an EOS token), and then,
after an answer cue, generates the item title under the catalog trie constraint with the same
constrained beam search as every other generative method. The sequence is

    prompt  |  reason_cue  |  reasoning (greedy, <= max_reasoning_tokens)  |  answer_cue  |  "title"\\n EOS

Every part is encoded on its own (as the prompt's segments are), so the catalog tokens follow the answer
cue exactly as they follow ``### Response: \\n`` in the plain prompt. With ``max_reasoning_tokens: 0``
neither cue is added: the decode is the plain one (tested).

CoT is a decode option (``decode: {cot: {...}}`` of a ``family: llm`` method), not a separate decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from latentrec.llm.tensors import left_pad


@dataclass
class CoTConfig:
    """The reasoning stage of a CoT decode.

    max_reasoning_tokens  bound on the generated reasoning (greedy; EOS ends it earlier; 0 = no reasoning)
    reason_cue            appended after the prompt to start the reasoning ({c}: the category noun)
    answer_cue            appended after the reasoning; the catalog-constrained title follows it
    batch_size            prompts reasoned together (left-padded); None: the decode's batch size
    """

    max_reasoning_tokens: int = 128
    reason_cue: str = "Let's think step by step about what the user enjoys."
    answer_cue: str = "\nTherefore, the {c} the user will most likely buy next is:\n"
    batch_size: int | None = None

    def __post_init__(self):
        if int(self.max_reasoning_tokens) < 0:
            raise ValueError(f"cot.max_reasoning_tokens must be >= 0, got {self.max_reasoning_tokens}")
        self.max_reasoning_tokens = int(self.max_reasoning_tokens)

    @classmethod
    def from_dict(cls, d: dict | None) -> "CoTConfig":
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown cot option(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return cls(**d)


@dataclass
class Reasoning:
    prompts: list[list[int]]  # prompt + cues + reasoning: what the constrained decode starts from
    tokens: list[list[int]]  # the reasoning tokens of each user (EOS excluded)


def _eos_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


@torch.inference_mode()
def greedy_reasoning(llm, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of each prompt, at most ``max_new_tokens`` tokens, cut before the first EOS.

    Batched with left padding through HF ``generate`` (KV cache); the tests check it against an
    unbatched loop of full forward passes."""
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    device = next(llm.parameters()).device
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    eos = _eos_ids(tokenizer)
    # Qwen2.5's embedding matrix has rows past the tokenizer (padding to a multiple of 128): no text token
    # stands behind them (decode() drops them silently), so the unconstrained greedy must never pick one.
    rows = llm.get_output_embeddings().weight.shape[0]
    padded = list(range(len(tokenizer), rows)) or None
    out = llm.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos,
        suppress_tokens=padded,
        pad_token_id=tokenizer.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    new = out[:, ids.shape[1] :].tolist()
    result = []
    for row in new:
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        result.append(row[:cut])
    return result


def reason(llm, tokenizer, prompts: Sequence[Sequence[int]], cfg: CoTConfig, domain: str) -> Reasoning:
    """Prompts extended by the reasoning cue, the greedy reasoning and the answer cue."""
    if cfg.max_reasoning_tokens == 0:
        return Reasoning([list(p) for p in prompts], [[] for _ in prompts])
    enc = lambda text: tokenizer.encode(text.format(c=domain), add_special_tokens=False)  # noqa: E731
    cue, answer = enc(cfg.reason_cue), enc(cfg.answer_cue)
    started = [list(p) + cue for p in prompts]
    step = cfg.batch_size or len(started)
    tokens: list[list[int]] = []
    for i in range(0, len(started), step):
        tokens += greedy_reasoning(llm, tokenizer, started[i : i + step], cfg.max_reasoning_tokens)
    return Reasoning([s + r + answer for s, r in zip(started, tokens)], tokens)

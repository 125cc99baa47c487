"""Prompts and targets of the generative recommenders (REFERENCE.md §2).

`reference` style reproduces the reference text and tokenisation exactly, typos included
("recetenly", "palyed", "may bought", and the category noun with an extra "s"): the published models
were trained and evaluated on it. The prompt is three separately encoded segments (instruction, input,
optional `<|Thought|>`), then the target `"title"\\n` + EOS; the loss covers the target only.
`clean` style fixes the wording; the structure is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

THOUGHT_TOKEN = "<|Thought|>"
IGNORE_INDEX = -100

# The reference's category nouns (REFERENCE §2.1).
DOMAINS = {
    "CDs_and_Vinyl": "musics",
    "Toys_and_Games": "toys and games",
    "Video_Games": "video games",
    "Books": "books",
    "Sports_and_Outdoors": "sports and outdoors",
    "Office_Products": "office products",
    "Musical_Instruments": "music instruments",
    "Pet_Supplies": "pet supplies",
    "Arts_Crafts_and_Sewing": "arts products",
    "Movies": "movie",
}

_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. "
)
STYLES = {
    "reference": {
        "instruction": "Given a list of {c} the user recetenly enjoy, please write a new {c} that the user may bought",
        "input": "The user has palyed the following {c}s before: ",
    },
    "clean": {
        "instruction": "Given a list of {c} the user recently enjoyed, recommend the next {c} the user will buy",
        "input": "The user has bought the following {c} before: ",
    },
}


def prompt_segments(history_titles: list[str], domain: str, style: str = "reference") -> tuple[str, str]:
    """(instruction segment, input segment); the input ends with `### Response: \\n`."""
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose from {sorted(STYLES)}")
    s = STYLES[style]
    instruction = f"{_PREAMBLE}\n\n### Instruction:\n{s['instruction'].format(c=domain)}\n"
    history = ", ".join(f'"{t}"' for t in history_titles)
    user_input = f"### User Input: \n{s['input'].format(c=domain)}{history}\n\n### Response: \n"
    return instruction, user_input


def target_text(title: str) -> str:
    return f'"{title}"\n'


class SegmentEncoder:
    """Encodes each segment on its own, as the reference does: BPE never merges across segments.

    A BOS is placed once at the very start only for tokenizers that add one by themselves
    (Qwen2.5 and SmolLM2 do not); segments never carry BOS/EOS of their own.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos_id = tokenizer.eos_token_id
        probe = tokenizer.encode("a")
        self.bos_id = (
            tokenizer.bos_token_id
            if (tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
            else None
        )
        self.thought_id = (
            tokenizer.convert_tokens_to_ids(THOUGHT_TOKEN) if THOUGHT_TOKEN in tokenizer.get_vocab() else None
        )

    def enc(self, text: str) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False)
        return ids

    def prompt_ids(self, history_titles, domain, style="reference", thought: bool = False) -> list[int]:
        a, b = prompt_segments(history_titles, domain, style)
        ids = ([self.bos_id] if self.bos_id is not None else []) + self.enc(a) + self.enc(b)
        if thought:
            if self.thought_id is None:
                raise ValueError(f"tokenizer has no {THOUGHT_TOKEN}; add it with add_thought_token()")
            ids.append(self.thought_id)
        return ids

    def target_ids(self, title: str) -> list[int]:
        return self.enc(target_text(title)) + [self.eos_id]


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int


def encode_sample(
    encoder: SegmentEncoder, history_titles, target_title, domain, *, style="reference", thought=False, max_len=512
) -> EncodedSample:
    prompt = encoder.prompt_ids(history_titles, domain, style, thought)
    target = encoder.target_ids(target_title)
    ids = prompt + target
    labels = [IGNORE_INDEX] * len(prompt) + target
    # The reference keeps the LAST max_len tokens (left truncation), so the target always survives.
    cut = max(0, len(ids) - max_len)
    return EncodedSample(ids[cut:], labels[cut:], len(prompt) - cut)


def add_thought_token(tokenizer, model=None) -> int:
    """Add `<|Thought|>` as a special token (its id: the tokenizer's length before) and give the model a row
    for it, initialised as resize_token_embeddings initialises new rows (the mean of the token rows).

    A matrix without room grows (SmolLM2: exactly one row per token). Qwen2.5's is padded beyond its
    tokenizer (151,936 rows for 151,665 tokens): resizing it to len(tokenizer) would SHRINK it, dropping the
    padded rows and changing the vocabulary size of the logits, so the token takes the first padded row and
    every other row, padded ones included, stays as it was."""
    before = len(tokenizer)
    added = THOUGHT_TOKEN not in tokenizer.get_vocab()
    if added:
        tokenizer.add_special_tokens({"additional_special_tokens": [THOUGHT_TOKEN]})
    token_id = tokenizer.convert_tokens_to_ids(THOUGHT_TOKEN)
    if model is not None:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        elif added:
            import torch

            mats = {
                m.weight.data_ptr(): m.weight
                for m in (model.get_input_embeddings(), model.get_output_embeddings())
                if m is not None
            }  # one matrix when the embeddings are tied
            with torch.no_grad():
                for w in mats.values():
                    w[token_id] = w[:before].mean(0)
    return token_id

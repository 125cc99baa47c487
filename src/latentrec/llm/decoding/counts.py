"""The work of a decode that any prefix-aware decoder must do (its FLOP floor), counted while it runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
        return {
            "linear_and_head": 2.0 * linear * self.backbone_tokens + 2.0 * head * self.vocabulary_rows,
            "attention": 4.0 * len(layers) * config.num_attention_heads * head_dim * self.attended,
        }

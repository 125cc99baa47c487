"""Number formats: which mixed-precision mode a run uses, and where values are upcast.

Losses, softmaxes and log-probabilities are computed in at least fp32 (bf16 logits lose the small
differences between beams and between noisy latents), but never downcast: a float64 model (the exact
tests) stays float64 end to end.
"""

from __future__ import annotations

import torch


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 if it is a narrower float, unchanged if it is fp32 or fp64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def wide_einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """``torch.einsum`` in at least fp32, also under autocast: autocast runs every einsum/matmul in bf16
    whatever its inputs' dtype, so upcasting the operands alone would not keep attention scores or Gram
    matrices in fp32 (the softmax after them would then see bf16)."""
    with torch.autocast(operands[0].device.type, enabled=False):
        return torch.einsum(equation, *(upcast(t) for t in operands))


def resolve_mixed_precision(choice: str) -> str:
    """accelerate's mixed_precision for a config value: ``auto`` is bf16 on a GPU that has it, else fp32."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"

"""The plan's FLOP count of each kind of LLM work against torch.utils.flop_counter on the code itself
(a tiny Qwen2 model): within 10 %, the bound the plan promises."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from latentrec.flops import Backbone, decode_user, rl_head_again, rl_row, train_row
from latentrec.memory_estimate import STEP_KINDS, DtypePolicy, _Run
from tests.test_memory_estimate import tiny_qwen2, tiny_shapes


def counter() -> FlopCounterMode:
    """FlopCounterMode counting the CPU attention kernel as the CUDA ones are counted (full QK^T and AV)."""
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(
            q, k, v
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda g,
        q,
        k,
        v,
        *a,
        out_shape=None,
        **kw: sdpa_backward_flop_count(g, q, k, v),
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


def plan_count(kind: str, bb: Backbone, s) -> float:
    """The plan's row functions (what flops.sft / latent_sft / latent_rl / decode_shard multiply by rows)."""
    lat = s.n_latents * s.refine_steps
    if kind == "sft":
        return s.micro_batch * train_row(bb, s.prompt_len, s.target_len)
    if kind == "latent_sft":
        return s.micro_batch * train_row(bb, s.prompt_len, s.target_len, lat)
    if kind in ("lr_grpo", "flr_grpo"):
        again = rl_head_again(s.micro_batch, s.group_size, s.target_len)
        return s.micro_batch * rl_row(
            bb, s.prompt_len, s.target_len, s.group_size, lat, kl=kind == "flr_grpo", head_again=again
        )
    return s.decode_batch * decode_user(bb, s.prompt_len, s.num_beams, s.max_new_tokens)


@pytest.mark.parametrize("kind,piece", [(k, None) for k in STEP_KINDS] + [("lr_grpo", 8), ("flr_grpo", 8)])
def test_plan_flops_match_the_counted_flops(kind, piece, monkeypatch):
    """``piece``: RL's target log-probs in pieces of that many tokens, the LM head recomputed in the backward
    (what the paper's shapes do), which the plan then counts."""
    import contextlib

    import latentrec.llm.latent as latent_mod

    if piece:
        monkeypatch.setattr(latent_mod, "LOGPROB_PIECE_TOKENS", piece)
        assert rl_head_again(tiny_shapes(kind).micro_batch, tiny_shapes(kind).group_size, tiny_shapes(kind).target_len)
    torch.manual_seed(0)
    cfg, shapes = tiny_qwen2(), tiny_shapes(kind)
    run = _Run(kind, cfg, shapes, DtypePolicy(), contextlib.nullcontext())  # real weights
    with counter() as fc:
        run.decode_batch() if kind == "decode" else run.micro_batch()
    counted = fc.get_total_flops()
    planned = plan_count(kind, Backbone.from_config(cfg), shapes)
    assert abs(planned / counted - 1) < 0.10, (kind, planned / counted)

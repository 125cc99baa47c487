"""The GPU check's real-shape part: the backbone's own architecture at the paper's shapes, measured beside
the fake-weight estimate (latentrec.memory_estimate) and the plan's FLOP count (latentrec.flops).

A randomly initialised Qwen2.5-1.5B-shaped model, built from config/models/Qwen2.5-1.5B/config.json (no
weights are read; random weights cost the same time and memory), runs with the GPU path's number formats
(fp32 master weights under bf16 autocast for training, bf16 weights to decode):

  sft      an SFT token budget: micro-batches of `micro_batch` rows through SFTTask and AdamW
  lr_grpo  one LR-GRPO step at K = 8 (LatentR3's step_loss, frozen LLM, the head's AdamW)
  decode   one constrained-beam-search batch of 64 prompts at 10 beams (the tree KV layout, every beam alive)

Each reports tokens/s (users/s for decode), MFU (the plan's FLOP count of the same work per second over
the accelerator's peak) and the peak memory beside the estimate. Under --tiny the same runs on a tiny
config of the same family, on the CPU.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, replace

import torch

from latentrec import flops
from latentrec.memory_estimate import DtypePolicy, Shapes, _Run, estimate, model_config

# The paper's shapes (config/paper.yaml, a CDs-like prompt): 16 prompts x K = 8 per GPU for LR-GRPO.
PAPER = Shapes(
    micro_batch=16, prompt_len=160, target_len=16, group_size=8, decode_batch=64, num_beams=10, max_new_tokens=16
)
TINY = Shapes(micro_batch=4, prompt_len=40, target_len=8, group_size=8, decode_batch=64, num_beams=10, max_new_tokens=6)


def tiny_config():
    """Qwen2.5-1.5B's config with tiny widths: the same family and code path."""
    cfg = model_config("Qwen2.5-1.5B")
    for k, v in dict(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ).items():
        setattr(cfg, k, v)
    return cfg


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None


def _build(kind: str, cfg, shapes: Shapes, dev: torch.device, policy: DtypePolicy) -> _Run:
    with torch.device(dev):  # weights, head and batch made on the device
        return _Run(kind, cfg, shapes, policy, contextlib.nullcontext())


def _train(run: _Run, steps: int, dev: torch.device) -> float:
    """Seconds of `steps` optimiser steps of one micro-batch each, after one untimed step."""
    opt = torch.optim.AdamW(run.params, lr=1e-5, weight_decay=0.0)
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            _sync(dev)
            t0 = time.perf_counter()
        run.micro_batch()
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(dev)
    return time.perf_counter() - t0


def run(tiny: bool, peak_flops: float, sft_tokens: int = 300_000, dev: str | None = None) -> dict:
    """The three parts; one dict per part with the measurement, the estimate and the plan's FLOPs."""
    device = torch.device(dev or ("cuda" if torch.cuda.is_available() and not tiny else "cpu"))
    cfg, shapes = (tiny_config(), TINY) if tiny else (model_config("Qwen2.5-1.5B"), PAPER)
    policy = DtypePolicy() if device.type == "cuda" else DtypePolicy(autocast=None, decode=torch.float32)
    bb = flops.Backbone.from_config(cfg)
    p, t = shapes.prompt_len, shapes.target_len
    out: dict = {
        "model": "tiny Qwen2" if tiny else "Qwen2.5-1.5B (random weights)",
        "params": bb.params,
        "device": str(device),
        "shapes": asdict(shapes),
    }

    _peak_reset(device)
    sft = _build("sft", cfg, shapes, device, policy)
    row_tokens = p + t
    steps = max(1, sft_tokens // (shapes.micro_batch * row_tokens)) if not tiny else 2
    seconds = _train(sft, steps, device)
    tokens = steps * shapes.micro_batch * row_tokens
    out["sft"] = {
        "steps": steps,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "mfu": steps * shapes.micro_batch * flops.train_row(bb, p, t) / seconds / peak_flops,
        "peak_memory_mb": _peak_mb(device),
    }
    del sft

    _peak_reset(device)
    rl = _build("lr_grpo", cfg, shapes, device, policy)
    seconds = _train(rl, 1, device)
    work = shapes.micro_batch * flops.rl_row(bb, p, t, shapes.group_size, shapes.n_latents)
    out["lr_grpo"] = {
        "samples": shapes.micro_batch,
        "group_size": shapes.group_size,
        "seconds": seconds,
        "tokens_per_second": shapes.micro_batch * (p + shapes.group_size * (shapes.n_latents + t)) / seconds,
        "mfu": work / seconds / peak_flops,
        "peak_memory_mb": _peak_mb(device),
    }
    del rl

    _peak_reset(device)
    dec = _build("decode", cfg, shapes, device, policy)
    dec.decode_batch()  # untimed: kernels and allocator warm
    _sync(device)
    t0 = time.perf_counter()
    dec.decode_batch()
    _sync(device)
    seconds = time.perf_counter() - t0
    work = shapes.decode_batch * flops.decode_user(bb, p, shapes.num_beams, shapes.max_new_tokens)
    out["decode"] = {
        "users": shapes.decode_batch,
        "beams": shapes.num_beams,
        "seconds": seconds,
        "users_per_second": shapes.decode_batch / seconds,
        "mfu": work / seconds / peak_flops,
        "peak_memory_mb": _peak_mb(device),
    }
    del dec

    for kind in ("sft", "lr_grpo", "decode"):  # the fake-weight estimate of the same step, GPU number formats
        e = estimate(kind, cfg, replace(shapes, accum=1))
        out[kind]["estimated_peak_mb"] = e.peak_bytes / 2**20
    return out


def markdown(r: dict) -> list[str]:
    def mb(x):
        return f"{x / 1024:.1f} GiB" if x else "–"

    lines = [
        "",
        f"Real shapes: {r['model']}, {r['params'] / 1e9:.3g} B parameters on {r['device']} "
        f"(prompt {r['shapes']['prompt_len']} + target {r['shapes']['target_len']} tokens)",
        "",
        "| part | work | rate | MFU (plan's FLOPs) | peak memory | estimate (fake weights) |",
        "|---|---|---|---|---|---|",
    ]
    s, g, d = r["sft"], r["lr_grpo"], r["decode"]
    lines.append(
        f"| SFT | {s['steps']} steps, {s['tokens']:,} tokens | {s['tokens_per_second']:,.4g} tokens/s | "
        f"{s['mfu']:.1%} | {mb(s['peak_memory_mb'])} | {mb(s['estimated_peak_mb'])} |"
    )
    lines.append(
        f"| LR-GRPO | 1 step, {g['samples']} samples x K={g['group_size']} | {g['seconds']:.3g} s/step | "
        f"{g['mfu']:.1%} | {mb(g['peak_memory_mb'])} | {mb(g['estimated_peak_mb'])} |"
    )
    lines.append(
        f"| decode | {d['users']} prompts x {d['beams']} beams | {d['users_per_second']:.3g} users/s | "
        f"{d['mfu']:.1%} | {mb(d['peak_memory_mb'])} | {mb(d['estimated_peak_mb'])} |"
    )
    return lines

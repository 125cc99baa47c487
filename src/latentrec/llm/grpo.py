"""LR-GRPO: LatentR3's reinforcement stage (REFERENCE.md §5, paper §3.3), fixed where the reference breaks.

With the LLM frozen, only the latent head trains. For each training sample, K latents are drawn: draw 0
noise-free, the others with Gaussian noise N(0, sigma^2 I) added at the thought position. No text is
generated: the reward of a draw is -perplexity of the ground-truth target given it. The advantage is
batch-level: A = (r - b) / ||r - b||_2, with b the mean of the noise-free rewards of the
`advantage_groups` samples that share a baseline (the reference: 2, one per GPU). The loss is the PPO
clipped surrogate (ratio = 1 in value with one iteration per batch) plus an optional beta * k3 KL to the
starting head, averaged per token within a sample and over the samples of an optimiser step.

Speed (REFERENCE §9.3.5): per sample, the prompt runs once without gradient and its KV cache serves all
K draws; one forward of K rows x (N + T) tokens gives both the rewards (detached) and the loss, which
the reference computes with four full passes over K copies of prompt + latent + target.
:func:`reference_step` is that naive computation, kept for tests and the benchmark.

Fixed against the reference: gradients are synchronised across GPUs (every forward goes through the
DDP wrapper); the baseline groups may span any number of GPUs; hyperparameters are chosen on
validation (`valid_neg_ppl`), not on test.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from latentrec.io_utils import progress
from latentrec.llm.latent import LatentReasoner, collate_prompt_target
from latentrec.llm.prompts import EncodedSample


@dataclass
class LRGRPOConfig:
    """RL hyperparameters; defaults are the paper's (LatentR3 appendix C, REFERENCE §5)."""

    lr: float = 1e-4
    group_size: int = 8  # K latent draws per sample (draw 0 noise-free)
    noise_std: float = 1.5
    groups_per_step: int = 32  # distinct samples per optimiser step, over all GPUs
    advantage_groups: int = 2  # samples sharing a baseline/normaliser; one forward per device holds advantage_groups / world
    advantage: str = "batch"  # batch: LR-GRPO; group: per-sample mean/std (the "w/o Batch Advantage" ablation)
    policy: str = "target"  # ratio of: target = target-token likelihoods (the reference); latent = the Gaussian
    #                         density of the noisy latent around the head's output (a true policy gradient)
    clip_low: float = 0.2
    clip_high: float = 0.28
    beta: float = 0.0  # k3 KL to the starting head; 0 keeps no reference copy
    warmup_steps: int = 200
    max_epochs: int = 1
    max_steps: int | None = None
    train_limit: int | None = None  # seeded random subset of train rows (None = all)
    valid_limit: int | None = 500  # rows scored by validation -PPL (model selection)
    max_len: int = 512
    mixed_precision: str = "auto"
    prompt_style: str = "reference"
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> "LRGRPOConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown RL option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        cfg = cls(**d)
        if cfg.policy not in ("target", "latent"):
            raise ValueError(f"policy must be 'target' or 'latent', got {cfg.policy!r}")
        if cfg.advantage not in ("batch", "group"):
            raise ValueError(f"advantage must be 'batch' or 'group', got {cfg.advantage!r}")
        if cfg.group_size < 2:
            raise ValueError("group_size must be >= 2 (draw 0 is the noise-free baseline)")
        if cfg.groups_per_step % cfg.advantage_groups:
            raise ValueError(f"groups_per_step {cfg.groups_per_step} must be a multiple of advantage_groups {cfg.advantage_groups}")
        return cfg


# ------------------------------------------------------------------------------- the math, shared
def rewards_from_logp(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-perplexity of each row's target: -exp(-mean token log-prob) [rows]."""
    return -torch.exp(-(logp.sum(1) / mask.sum(1)))


def advantages(rewards: torch.Tensor, mode: str) -> torch.Tensor:
    """rewards [G, K] (column 0 noise-free) -> advantages [G, K].

    batch: (r - b) / (||r - b||_2 + 1e-6), b = mean of the G noise-free rewards (one scalar);
    group: (r - mean_g) / (std_g + 1e-4) within each sample (standard GRPO).
    """
    if mode == "batch":
        centred = rewards - rewards[:, 0].mean()
        return centred / (centred.norm() + 1e-6)
    centred = rewards - rewards.mean(1, keepdim=True)
    return centred / (rewards.std(1, keepdim=True) + 1e-4)


def surrogate(logp, old_logp, adv_rows, mask, cfg: LRGRPOConfig, ref_logp=None) -> torch.Tensor:
    """Per-row token-summed clipped surrogate (+ beta k3 KL) [rows]."""
    ratio = torch.exp(logp - old_logp)
    a = adv_rows[:, None]
    per_tok = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * a)
    if ref_logp is not None and cfg.beta:
        d = ref_logp - logp
        per_tok = per_tok + cfg.beta * (torch.exp(d) - d - 1)
    return (per_tok * mask).sum(1)


def draw_noise(g: int, cfg: LRGRPOConfig, n_latents: int, hidden: int, generator: torch.Generator, device) -> torch.Tensor:
    noise = torch.randn((g, cfg.group_size, n_latents, hidden), generator=generator) * cfg.noise_std
    noise[:, 0] = 0.0
    return noise.to(device)


def step_loss(model, batch, noise, cfg: LRGRPOConfig, gather=lambda t: t, rank_slice=slice(None), ref_head=None):
    """The loss of one micro-step (fast path) and its stats. Sum over this device's samples of the
    per-sample token-mean surrogate; the caller scales by the number of samples per optimiser step."""
    k = cfg.group_size
    logp, clean = model(**batch, copies=k, noise=noise, frozen_llm=True, return_latents=True)  # [g*K, T]
    mask = batch["target_mask"].repeat_interleave(k, 0)
    g = batch["prompt_ids"].shape[0]
    rewards = rewards_from_logp(logp.detach(), mask).view(g, k)
    adv = advantages(gather(rewards), cfg.advantage)[rank_slice].reshape(-1)
    ref_logp = None
    if cfg.beta and ref_head is not None:
        with torch.no_grad():
            ref_logp = getattr(model, "module", model).forward(**batch, copies=k, noise=noise, frozen_llm=True, head=ref_head)
    if cfg.policy == "latent":
        # log N(z_old + eps; z(theta), sigma^2): one "token" per draw; its gradient is A * eps / sigma^2.
        taken = (clean.detach() + noise.reshape(clean.shape)).float()
        logpi = -((taken - clean.float()) ** 2).sum((1, 2)) / (2 * cfg.noise_std**2)
        one = torch.ones_like(logpi)[:, None]
        per_row = surrogate(logpi[:, None], logpi.detach()[:, None], adv, one, cfg)
        per_sample = per_row.view(g, k).sum(1) / k
    else:
        per_row = surrogate(logp, logp.detach(), adv, mask, cfg, ref_logp)
        per_sample = per_row.view(g, k).sum(1) / mask.view(g, -1).sum(1)
    return per_sample.sum(), {"reward": float(rewards.mean()), "reward_clean": float(rewards[:, 0].mean())}


def reference_step(reasoner: LatentReasoner, samples: list[EncodedSample], noise: torch.Tensor, cfg: LRGRPOConfig):
    """The naive computation the reference does (REFERENCE §5.2-5.3): per sample, K rows of the full
    prompt + latent + target, each latent from its own pass over the prompt; once without gradient for
    the rewards, then again with gradient for the loss. Same value as :func:`step_loss` (target policy)."""
    with torch.no_grad():
        rewards = torch.stack([
            -torch.exp(-reasoner.reference_logprobs(_prompt(s), _target(s), noise[i]).mean(1))
            for i, s in enumerate(samples)])
    adv = advantages(rewards, cfg.advantage)
    total = 0.0
    for i, s in enumerate(samples):
        logp = reasoner.reference_logprobs(_prompt(s), _target(s), noise[i])  # [K, T]
        mask = torch.ones_like(logp)
        total = total + surrogate(logp, logp.detach(), adv[i], mask, cfg).sum() / mask.sum()
    return total


def _prompt(s: EncodedSample) -> list[int]:
    return s.input_ids[: s.prompt_len]


def _target(s: EncodedSample) -> list[int]:
    return s.input_ids[s.prompt_len :]


# --------------------------------------------------------------------------------------- training
@torch.no_grad()
def valid_neg_ppl(model: LatentReasoner, samples: list[EncodedSample], pad: int, batch_size: int = 16) -> float:
    """Mean -perplexity of the ground-truth target with the noise-free latent (the selection metric)."""
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for start in range(0, len(samples), batch_size):
        batch = {k: v.to(device) for k, v in collate_prompt_target(samples[start : start + batch_size], pad).items()}
        logp = model(**batch)
        total += float(rewards_from_logp(logp, batch["target_mask"]).sum())
        n += len(logp)
    return total / max(n, 1)


def train_lr_grpo(model: LatentReasoner, tokenizer, train: list[EncodedSample], valid: list[EncodedSample],
                  cfg: LRGRPOConfig, log_every: int = 1) -> dict:
    """Train the head in place; returns a log (per-step rewards, validation -PPL before and after)."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    from latentrec.llm.sft import _mixed_precision

    for p in model.llm.parameters():
        p.requires_grad_(False)
    params = [p for p in model.head.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"latent head {model.head.kind!r} has no parameters to train with RL")
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision))
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.advantage_groups % world:
        raise ValueError(f"advantage_groups {cfg.advantage_groups} must be a multiple of the GPU count {world}")
    per_rank = cfg.advantage_groups // world
    micro_steps = cfg.groups_per_step // cfg.advantage_groups
    steps_per_epoch = len(train) // cfg.groups_per_step  # the last incomplete step is dropped (as trl)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} train samples < groups_per_step {cfg.groups_per_step}")
    total_steps = min(cfg.max_steps or math.inf, steps_per_epoch * cfg.max_epochs)

    ref_head = copy.deepcopy(model.head).requires_grad_(False) if cfg.beta else None
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup_steps, total_steps // 2), total_steps)
    wrapped, opt = accelerator.prepare(model, opt)
    if ref_head is not None:
        ref_head.to(accelerator.device)
    pad = tokenizer.pad_token_id
    noise_gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)  # each GPU its own draws (as trl)
    hidden = model.llm.config.hidden_size

    before = valid_neg_ppl(model, valid, pad)
    history, step, t0 = [], 0, time.time()
    bar = progress(total=total_steps, desc="lr-grpo", unit="step", disable=not accelerator.is_main_process)
    for epoch in range(cfg.max_epochs):
        order = np.random.default_rng(cfg.seed + epoch).permutation(len(train))
        for s in range(steps_per_epoch):
            if step >= total_steps:
                break
            wrapped.train()
            chunk = order[s * cfg.groups_per_step : (s + 1) * cfg.groups_per_step]
            stats = []
            for m in range(micro_steps):
                ids = chunk[m * cfg.advantage_groups : (m + 1) * cfg.advantage_groups]
                mine = ids[rank * per_rank : (rank + 1) * per_rank]
                batch = {k: v.to(accelerator.device) for k, v in collate_prompt_target([train[i] for i in mine], pad).items()}
                noise = draw_noise(len(mine), cfg, model.n_latents, hidden, noise_gen, accelerator.device)
                sync = m == micro_steps - 1
                ctx = accelerator.no_sync(wrapped) if (world > 1 and not sync) else contextlib.nullcontext()
                with ctx, accelerator.autocast():
                    loss, st = step_loss(wrapped, batch, noise, cfg, gather=accelerator.gather,
                                         rank_slice=slice(rank * per_rank, (rank + 1) * per_rank), ref_head=ref_head)
                    # DDP averages over ranks: scale so the step's loss is the mean over all its samples.
                    accelerator.backward(loss * world / cfg.groups_per_step)
                stats.append(st)
            accelerator.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                history.append({"step": step, "lr": sched.get_last_lr()[0],
                                "reward": float(np.mean([x["reward"] for x in stats])),
                                "reward_clean": float(np.mean([x["reward_clean"] for x in stats]))})
    bar.close()
    seconds = time.time() - t0
    after = valid_neg_ppl(model, valid, pad)
    return {"config": asdict(cfg), "steps": step, "seconds": seconds, "world_size": world,
            "device": str(accelerator.device),
            "seconds_per_step": seconds / max(step, 1), "valid_neg_ppl_before": before, "valid_neg_ppl": after,
            "history": history, "trainable_parameters": sum(p.numel() for p in params)}

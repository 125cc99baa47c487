"""LR-GRPO: LatentR3's reinforcement stage (docs/reference_code.md §5, paper §3.3), fixed where the reference breaks.

With the LLM frozen, only the latent head trains. For each training sample, K latents are drawn: draw 0
noise-free, the others with Gaussian noise N(0, sigma^2 I) added at the thought position. No text is
generated: the reward of a draw is -perplexity of the ground-truth target given it. The advantage is
batch-level: A = (r - b) / ||r - b||_2, with b the mean of the noise-free rewards of the samples that
share a baseline: by default all samples of the optimiser step on all processes (the paper's batch);
`advantage_groups: 2` is the reference's (one group per GPU of its two). The loss is the PPO
clipped surrogate (ratio = 1 in value with one iteration per batch) plus an optional beta * k3 KL to the
starting head, averaged per token within a sample and over the samples of an optimiser step.

Speed (docs/reference_code.md §7 item 5): per sample, the prompt runs once without gradient and its KV cache serves all
K draws; one forward of K rows x (N + T) tokens gives both the rewards (detached) and the loss, which
the reference computes with four full passes over K copies of prompt + latent + target.
:func:`reference_step` is that naive computation, kept for tests and the benchmark.

Fixed against the reference: gradients are synchronised across GPUs (every forward goes through the
DDP wrapper); the baseline groups may span any number of GPUs; the noise draws and so the results do
not depend on the number of GPUs (docs/gpu_path.md); hyperparameters are chosen on
validation (`valid_neg_ppl`), not on test.

FLR-GRPO (FLR paper §4.2, docs/flr.md) is a set of options here, not a fork: `reward="hybrid"`
(reward_alpha * mean target-token log-prob + reward_beta * [a greedy catalog-constrained decode after the
noisy thought spells the target], read off the teacher-forced logits the loss forward computes anyway, so
no decode runs), `advantage="base"` ((r_i - r_0) / (||r_{1:} - r_0||_2 + eps) within each sample,
r_0 the noise-free draw), `regularisers=True` (the head's weighted regularisers join the loss, eq. 13),
`beta` > 0 (k3 KL to the warm-up head), clip 0.2 / 0.28.

The original GRPO of LatentR3's appendix F (the cost baseline of its Figure 4) is `rollout="decode"`: the
same K latents per sample (draw 0 noise-free, the others noisy), then one greedy catalog-constrained title
decoded after each, reward 1 for the ground-truth title and 0 otherwise, the per-sample (group) advantage,
and the ratio-1 surrogate over the decoded titles' tokens with gradient into the whole model
(:func:`decode_step_loss`). `rollout="beams"` is a variant that explores answers, not latents: the K
beams of one beam search after the noise-free latent.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from latentrec.checks import check_options
from latentrec.io_utils import progress
from latentrec.llm import tracking
from latentrec.llm.latent import LatentReasoner, collate_prompt_target
from latentrec.llm.precision import resolve_mixed_precision, upcast
from latentrec.llm.prompts import STYLES, EncodedSample
from latentrec.runs import peak_memory_mb


@dataclass
class LRGRPOConfig:
    """RL hyperparameters; defaults are the paper's (LatentR3 appendix C, docs/reference_code.md §5)."""

    lr: float = field(
        default=1e-4,
        metadata={
            "help": "AdamW on the head only (the LLM is frozen; with `rollout: decode` or `beams` on the whole "
            "model); cosine schedule after `warmup_steps`"
        },
    )
    group_size: int = field(default=8, metadata={"help": "K latent draws per sample; draw 0 is noise-free"})
    noise_std: float = field(default=1.5, metadata={"help": "sigma of the Gaussian noise added to the latent"})
    noise_latents: str = field(
        default="first",
        metadata={
            "help": "with N > 1 latents: `first` perturbs only the first latent, the later ones follow "
            "deterministically from it (LatentR3 appendix E); `all` draws independent noise for every latent"
        },
    )
    groups_per_step: int = field(
        default=32,
        metadata={"help": "samples per optimiser step over all GPUs (the last incomplete step of an epoch is dropped)"},
    )
    advantage_groups: int | None = field(
        default=None,
        metadata={
            "help": "samples that share one baseline (mean of their noise-free rewards) and one L2 normaliser. "
            "null: every sample of the optimiser step on every process (the paper's batch-level advantage; "
            "one forward per process holds `groups_per_step / GPUs` samples × `group_size` draws); `2`: the "
            "reference code's accident (one group per GPU of its two; paper.yaml's `LatentR3-refAdv` ablation "
            "row); otherwise a divisor of `groups_per_step` and a multiple of the GPU count"
        },
    )
    forward_samples: int | None = field(
        default=None,
        metadata={
            "help": "samples one forward holds (rollout `noise`): null, all the samples sharing a baseline on this "
            "process (`advantage_groups` / GPUs); fewer, and their rewards are first scored without gradient "
            "in forwards of this size, the advantages taken over all of them, then the loss forwards run "
            "this many at a time. The same step for one more forward without gradient: a memory knob (the "
            "plan's peak-memory column names it) that leaves the batch advantage's scope alone"
        },
    )
    advantage: str = field(
        default="batch",
        metadata={
            "help": "`batch`: A = (r - b) / (‖r - b‖₂ + 1e-6) (LR-GRPO); `group`: per-sample (r - mean) / (std + 1e-4) "
            '("w/o Batch Advantage"); `base`: per-sample (r_i − r_0) / (‖r_{1:} − r_0‖₂ + 1e-6), r_0 the '
            "sample's noise-free draw (FLR-GRPO)"
        },
    )
    rollout: str = field(
        default="noise",
        metadata={
            "help": "`noise`: LR-GRPO (K noisy latents, no text generated, the head trains). `decode`: the original "
            "GRPO of LatentR3 appendix F (Figure 4; paper.yaml's `LatentR3-origGRPO`): the same K latents per "
            "sample (draw 0 noise-free, the others with N(0, `noise_std`²) noise as `noise_latents` says), one "
            "greedy (beam-1) catalog-constrained title decoded after each (all draws of a forward in one "
            "batched search), reward 1 if it is the ground-truth title else 0, and the ratio-1 surrogate over "
            "each title's tokens given its own noisy latent, with gradient into the whole model (LLM and head; "
            "`lr` then applies to all of it). `beams`: as `decode`, but the K completions are the K beams of "
            "one beam search after the noise-free latent (explores answers, not latents). `decode` and `beams` "
            "need `advantage: group`, `policy: target`, `beta: 0`, `regularisers: false`; with "
            "`advantage: group`, `advantage_groups` only sets how many samples one forward holds. "
            "`rl_log.json` records per step `reward`, `reward_clean` (draw 0) and `distinct_titles` (distinct "
            "titles among a sample's K completions), and for every rollout `advantage_sq_sum` and "
            "`advantage_clean_sum` (the step's advantages over all processes: docs/gpu_path.md)"
        },
    )
    policy: str = field(
        default="target",
        metadata={
            "help": "what the PPO ratio is a probability of: `target`, the ground-truth target's token likelihoods "
            "given each noisy latent (the reference); `latent`, the Gaussian density of the noisy latent "
            "around the head's output (a true policy gradient; see docs/latentr3.md for why it matters)"
        },
    )
    clip_low: float = field(
        default=0.2,
        metadata={
            "help": "PPO clip range below 1 (the ratio is 1 in value with one update per batch, as in the reference)"
        },
    )
    clip_high: float = field(default=0.28, metadata={"help": "PPO clip range above 1"})
    beta: float = field(
        default=0.0, metadata={"help": "weight of the k3 KL to the starting head (0 keeps no reference copy)"}
    )
    reward: str = field(
        default="neg_ppl",
        metadata={
            "help": "`neg_ppl`: −perplexity of the target given the draw (LR-GRPO); `hybrid`: `reward_alpha` · mean "
            "target-token log-prob + `reward_beta` · 𝟙[a greedy catalog-constrained decode after the noisy "
            "thought spells the target] (FLR-GRPO; the G decodes of a sample run batched on the loss "
            "forward's KV cache)"
        },
    )
    reward_alpha: float = field(default=0.1, metadata={"help": "FLR-GRPO's weight of the log-prob reward (FLR §4.2)"})
    reward_beta: float = field(default=1.0, metadata={"help": "FLR-GRPO's weight of the exact-match reward"})
    regularisers: bool = field(
        default=False,
        metadata={
            "help": "add the head's weighted regularisers to the RL loss, once per sample (FLR eq. 13; their "
            "uncertainty weights train too); false: those weights are frozen"
        },
    )
    warmup_steps: int = field(
        default=200,
        metadata={"help": "optimiser steps of linear warm-up (at most half of all steps), then cosine decay to 0"},
    )
    max_epochs: int = field(default=1, metadata={"help": "passes over the (limited) train rows"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    train_limit: int | None = field(
        default=None, metadata={"help": "a seeded random subset of N train rows; null = all"}
    )
    valid_limit: int | None = field(
        default=500,
        metadata={"help": "validation rows scored by −perplexity of the target (model selection); null = all"},
    )
    max_len: int = field(default=512, metadata={"help": "samples keep their last `max_len` tokens, as in `llm.sft`"})
    mixed_precision: str = field(default="auto", metadata={"help": "as in `llm.sft`"})
    prompt_style: str = field(default="reference", metadata={"help": "as in `llm.sft`"})
    seed: int = field(default=0, metadata={"help": "set by each job from the run's `seeds`; a value here is replaced"})

    @classmethod
    def from_dict(cls, d: dict | None) -> "LRGRPOConfig":
        """Checked before anything trains: known fields, each of its annotated type (ints where ints), in range.
        Raises ValueError "<field>: must be <allowed>, got <value>" (validate_config prefixes the key path)."""
        d = check_options(
            cls,
            d,
            "RL",
            above={"lr": 0},
            at_least={
                "group_size": 2,
                "noise_std": 0,
                "groups_per_step": 1,
                "advantage_groups": 1,
                "forward_samples": 1,
                "clip_low": 0,
                "clip_high": 0,
                "beta": 0,
                "warmup_steps": 0,
                "max_epochs": 1,
                "max_steps": 1,
                "train_limit": 1,
                "valid_limit": 1,
                "max_len": 1,
                "seed": 0,
            },
            below={"clip_low": 1},
            choices={
                "noise_latents": ("first", "all"),
                "advantage": ("batch", "group", "base"),
                "rollout": ("noise", "decode", "beams"),
                "policy": ("target", "latent"),
                "reward": ("neg_ppl", "hybrid"),
                "mixed_precision": ("auto", "no", "bf16", "fp16"),
                "prompt_style": tuple(STYLES),
            },
            notes={"group_size": " (draw 0 is the noise-free baseline)"},
        )
        cfg = cls(**d)
        if cfg.reward == "hybrid" and cfg.rollout != "noise":
            raise ValueError("reward: 'hybrid' (FLR-GRPO) scores noisy thoughts: it needs rollout 'noise'")
        if cfg.whole_model:  # the original GRPO: its own reward, advantage and ratio; no KL copy of the LLM
            for key, want in (("advantage", "group"), ("policy", "target"), ("beta", 0.0), ("regularisers", False)):
                if getattr(cfg, key) != want:
                    raise ValueError(
                        f"{key}: must be {want!r} with rollout {cfg.rollout!r} (the original GRPO: "
                        f"group advantage, ratio over the decoded tokens, no KL, no regularisers), "
                        f"got {getattr(cfg, key)!r}"
                    )
        if cfg.forward_samples is not None and cfg.whole_model:
            raise ValueError(
                "forward_samples: applies to rollout 'noise'; with 'decode' or 'beams' and the group advantage, "
                "advantage_groups alone sets the samples of a forward"
            )
        if cfg.groups_per_step % cfg.baseline_groups:
            raise ValueError(
                f"groups_per_step: must be a multiple of advantage_groups ({cfg.advantage_groups}), "
                f"got {cfg.groups_per_step}"
            )
        return cfg

    @property
    def baseline_groups(self) -> int:
        """Samples that share one advantage baseline and normaliser (default: the whole optimiser step)."""
        return self.advantage_groups or self.groups_per_step

    @property
    def exact_match(self) -> bool:
        """The reward needs a constrained decode per draw (FLR-GRPO's exact-match term)."""
        return self.reward == "hybrid" and self.reward_beta != 0

    @property
    def whole_model(self) -> bool:
        """The original GRPO (appendix F): decoded completions, and the LLM trains with the head."""
        return self.rollout in ("decode", "beams")

    @property
    def needs_catalog(self) -> bool:
        return self.whole_model or self.exact_match


# ------------------------------------------------------------------------------- the math, shared
def rewards_from_logp(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-perplexity of each row's target: -exp(-mean token log-prob) [rows]."""
    return -torch.exp(-(logp.sum(1) / mask.sum(1)))


def hybrid_rewards(
    logp: torch.Tensor, mask: torch.Tensor, hits: torch.Tensor | None, cfg: LRGRPOConfig
) -> torch.Tensor:
    """FLR-GRPO: reward_alpha * mean token log-prob of the target + reward_beta * exact match [rows]."""
    r = cfg.reward_alpha * logp.sum(1) / mask.sum(1)
    return r if hits is None else r + cfg.reward_beta * hits.to(r.dtype)


def advantages(rewards: torch.Tensor, mode: str) -> torch.Tensor:
    """rewards [G, K] (column 0 noise-free) -> advantages [G, K].

    batch: (r - b) / (||r - b||_2 + 1e-6), b = mean of the G noise-free rewards (one scalar);
    group: (r - mean_g) / (std_g + 1e-4) within each sample (standard GRPO);
    base: (r - r_g0) / (||r_g,1: - r_g0||_2 + 1e-6) within each sample, r_g0 its noise-free reward (FLR-GRPO).
    """
    if mode == "base":
        centred = rewards - rewards[:, :1]
        return centred / (centred[:, 1:].norm(dim=1, keepdim=True) + 1e-6)
    if mode == "batch":
        centred = rewards - rewards[:, 0].mean()
        return centred / (centred.norm() + 1e-6)
    centred = rewards - rewards.mean(1, keepdim=True)
    return centred / (rewards.std(1, keepdim=True) + 1e-4)


# Per-step sums over the samples of all processes (the trainer adds them up across ranks), logged so the
# advantage's scope is observable: with the batch advantage, advantage_sq_sum is 1 per baseline group and
# advantage_clean_sum 0; advantages computed per process would give `world` per group.
SUMMED_STATS = ("advantage_sq_sum", "advantage_clean_sum")


def advantage_stats(adv: torch.Tensor) -> dict[str, float]:
    """This process's share of the SUMMED_STATS of advantages [g, K] (column 0: the noise-free draws)."""
    return {
        "advantage_sq_sum": float((adv.double() ** 2).sum()),
        "advantage_clean_sum": float(adv[:, 0].double().sum()),
    }


def surrogate(logp, old_logp, adv_rows, mask, cfg: LRGRPOConfig, ref_logp=None) -> torch.Tensor:
    """Per-row token-summed clipped surrogate (+ beta k3 KL) [rows]."""
    ratio = torch.exp(logp - old_logp)
    a = adv_rows[:, None]
    per_tok = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * a)
    if ref_logp is not None and cfg.beta:
        d = ref_logp - logp
        per_tok = per_tok + cfg.beta * (torch.exp(d) - d - 1)
    return (per_tok * mask).sum(1)


def draw_noise(
    g: int, cfg: LRGRPOConfig, n_latents: int, hidden: int, generator: torch.Generator, device, dtype=torch.float32
) -> torch.Tensor:
    """Gaussian noise [g, K, N, d]: draw 0 of each sample noise-free; with ``noise_latents="first"`` only
    the first latent is perturbed (the later ones follow deterministically from the noisy first)."""
    noise = torch.randn((g, cfg.group_size, n_latents, hidden), generator=generator) * cfg.noise_std
    noise[:, 0] = 0.0
    if cfg.noise_latents == "first":
        noise[:, :, 1:] = 0.0
    return noise.to(device=device, dtype=dtype)


def _draws(model, batch, noise, cfg: LRGRPOConfig, trie):
    """The loss forward: (per-token log-probs [g*K, T], noise-free latents, exact-match hits or None,
    target mask [g*K, T], rewards [g, K])."""
    k = cfg.group_size
    match = trie if cfg.exact_match else None
    if cfg.exact_match and trie is None:
        raise ValueError("the hybrid reward's exact-match term needs the catalog trie")
    out = model(**batch, copies=k, noise=noise, frozen_llm=True, return_latents=True, match_trie=match)  # [g*K, T]
    logp, clean = out[0], out[1]
    hits = out[2] if match is not None else None
    mask = batch["target_mask"].repeat_interleave(k, 0)
    g = batch["prompt_ids"].shape[0]
    if cfg.reward == "hybrid":
        rewards = hybrid_rewards(logp.detach(), mask, hits, cfg).view(g, k)
    else:
        rewards = rewards_from_logp(logp.detach(), mask).view(g, k)
    return logp, clean, hits, mask, rewards


def scored_advantages(model, batches, noises, cfg: LRGRPOConfig, gather=lambda t: t, rank_slice=slice(None), trie=None):
    """Advantages [g, K] of this process's samples, scored without gradient in the given forwards (pieces of
    its samples, `forward_samples` each) and taken over all processes' samples as one forward would."""
    with torch.no_grad():
        rewards = torch.cat([_draws(model, b, n, cfg, trie)[-1] for b, n in zip(batches, noises)])
    return advantages(gather(rewards), cfg.advantage)[rank_slice]


def step_loss(
    model,
    batch,
    noise,
    cfg: LRGRPOConfig,
    gather=lambda t: t,
    rank_slice=slice(None),
    ref_head=None,
    trie=None,
    adv: torch.Tensor | None = None,
):
    """The loss of one micro-step (fast path) and its stats. Sum over this device's samples of the
    per-sample token-mean surrogate (+ the head's regularisers with `cfg.regularisers`); the caller scales
    by the number of samples per optimiser step. `trie`: the catalog, for FLR-GRPO's exact-match reward.
    `adv`: these samples' advantages [g, K] when already taken over a larger group (scored_advantages)."""
    k = cfg.group_size
    logp, clean, hits, mask, rewards = _draws(model, batch, noise, cfg, trie)
    reg = getattr(model, "module", model).head.regularisers() if cfg.regularisers else {}
    g = rewards.shape[0]
    if adv is None:
        adv = advantages(gather(rewards), cfg.advantage)[rank_slice]
    adv_stats = advantage_stats(adv)
    adv = adv.reshape(-1)
    ref_logp = None
    if cfg.beta and ref_head is not None:
        with torch.no_grad():
            ref_logp = getattr(model, "module", model).forward(
                **batch, copies=k, noise=noise, frozen_llm=True, head=ref_head
            )
    if cfg.policy == "latent":
        # log N(z_old + eps; z(theta), sigma^2): one "token" per draw; its gradient is A * eps / sigma^2.
        taken = upcast(clean.detach() + noise.reshape(clean.shape))
        logpi = -((taken - upcast(clean)) ** 2).sum((1, 2)) / (2 * cfg.noise_std**2)
        one = torch.ones_like(logpi)[:, None]
        per_row = surrogate(logpi[:, None], logpi.detach()[:, None], adv, one, cfg)
        per_sample = per_row.view(g, k).sum(1) / k
    else:
        per_row = surrogate(logp, logp.detach(), adv, mask, cfg, ref_logp)
        per_sample = per_row.view(g, k).sum(1) / mask.view(g, -1).sum(1)
    loss = per_sample.sum()
    stats = {"reward": float(rewards.mean()), "reward_clean": float(rewards[:, 0].mean()), **adv_stats}
    if ref_logp is not None:  # k3 KL to the starting head, per target token (what beta weighs)
        d = (ref_logp - logp).detach()
        stats["kl"] = float(((torch.exp(d) - d - 1) * mask).sum() / mask.sum())
    if reg:  # eq. 13: the regularisers once per sample (their mean over the step's samples, after scaling)
        loss = loss + g * sum(reg.values())
        stats["regularisers"] = float(sum(reg.values()).detach())
    if hits is not None:
        stats["exact_match"] = float(hits.float().mean())
        stats["exact_match_clean"] = float(hits.view(g, k)[:, 0].float().mean())
    return loss, stats


def noisy_prefix(
    reasoner: LatentReasoner, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, noise: torch.Tensor | None = None
):
    """Left-padded [prompt, latents] input embeddings [B*K, L + N, d] and mask for decoding, K = noise.shape[1]
    draws per prompt (row i*K + j: prompt i, draw j) with the noise [B, K, N, d] added to the latents as
    :meth:`LatentReasoner.think` writes them (the same latents the loss forward computes); no noise: one
    noise-free row per prompt (:meth:`LatentReasoner.prefix_embeds`)."""
    copies = 1 if noise is None else noise.shape[1]
    latents, _ = reasoner.think(reasoner.encode_prompt(prompt_ids, prompt_mask), copies, noise)
    embeds = torch.cat((reasoner.embed(prompt_ids).repeat_interleave(copies, 0), latents), 1)
    mask = torch.cat((prompt_mask.repeat_interleave(copies, 0), prompt_mask.new_ones(latents.shape[:2])), 1)
    return embeds, mask


def decode_step_loss(model, batch, noise, trie, cfg: LRGRPOConfig, eos_token_id: int):
    """Original GRPO (appendix F). ``rollout="decode"``: per sample, the K = ``group_size`` latents of
    LR-GRPO (``noise`` [g, K, N, d] from :func:`draw_noise`: draw 0 noise-free), and after each its own
    [prompt, noisy latents] prefix one greedy (beam-1) catalog-constrained title, all g*K draws decoded in
    one batched search. ``rollout="beams"``: the K beams of one beam search after the noise-free latent.
    Reward 1 when the decoded title is the ground truth, else 0; group advantage (per-sample mean/std);
    the ratio-1 surrogate over each completion's tokens given the latents it was decoded from, token-mean
    per sample, with gradient into the whole model (LLM and head)."""
    from latentrec.llm.decoding import constrained_beam_search

    inner = getattr(model, "module", model)
    k = cfg.group_size
    g = batch["prompt_ids"].shape[0]
    beams = cfg.rollout == "beams"
    noise = None if beams else noise
    with torch.no_grad():
        was_training = inner.training
        inner.eval()
        embeds, emask = noisy_prefix(inner, batch["prompt_ids"], batch["prompt_mask"], noise)
        hyps = constrained_beam_search(
            inner.llm,
            None,
            trie,
            prefix_embeds=embeds,
            prefix_attention_mask=emask,
            num_beams=k if beams else 1,
            num_return=k if beams else 1,
            length_penalty=1.0,
            max_new_tokens=trie.max_depth,
            eos_token_id=eos_token_id,
        )  # every draw in one search
        inner.train(was_training)
    comps = []
    for row in hyps:  # [g*K] rows of one title (decode) or [g] rows of up to K beams (beams)
        seqs = [trie.sequence(node) for node, _ in row] or [[eos_token_id]]
        seqs += [seqs[-1]] * ((k if beams else 1) - len(seqs))  # fewer finished titles than beams: repeat the last
        comps += seqs
    rewards = torch.zeros(g * k)
    for r, c in enumerate(comps):
        i = r // k
        target = batch["target_ids"][i][batch["target_mask"][i] > 0].tolist()
        rewards[r] = float(list(c) == target)
    rewards = rewards.view(g, k)
    width = max(len(c) for c in comps)
    ids = torch.full((g * k, width), eos_token_id, dtype=torch.long)
    mask = torch.zeros((g * k, width))
    for r, c in enumerate(comps):
        ids[r, : len(c)] = torch.tensor(list(c))
        mask[r, : len(c)] = 1
    dev = batch["prompt_ids"].device
    ids, mask = ids.to(dev), mask.to(dev)
    logp = model(batch["prompt_ids"], batch["prompt_mask"], ids, mask, copies=k, noise=noise)
    adv = advantages(rewards.to(dev), "group")
    adv_stats = advantage_stats(adv)
    adv = adv.reshape(-1)
    per_row = surrogate(logp, logp.detach(), adv, mask, cfg)
    per_sample = per_row.view(g, k).sum(1) / mask.view(g, -1).sum(1)
    distinct = np.mean([len({tuple(c) for c in comps[i * k : (i + 1) * k]}) for i in range(g)])
    return per_sample.sum(), {
        "reward": float(rewards.mean()),
        "reward_clean": float(rewards[:, 0].mean()),
        "distinct_titles": float(distinct),
        **adv_stats,
    }


def reference_step(
    reasoner: LatentReasoner,
    samples: list[EncodedSample],
    noise: torch.Tensor,
    cfg: LRGRPOConfig,
    trie=None,
    eos_token_id: int | None = None,
):
    """The naive computation the reference does (docs/reference_code.md §5.2-5.3): per sample, K rows of the full
    prompt + latent + target, each latent from its own pass over the prompt; once without gradient for
    the rewards, then again with gradient for the loss. Same value as :func:`step_loss` (target policy,
    beta 0). FLR-GRPO's exact match: one beam-1 constrained beam search per draw, each from its own
    [prompt, noisy latents] prefill (no cache shared with anything)."""
    with torch.no_grad():
        rows = []
        for i, s in enumerate(samples):
            logp, prefix = reasoner.reference_logprobs(_prompt(s), _target(s), noise[i], return_prefix=True)
            if cfg.reward != "hybrid":
                rows.append(-torch.exp(-logp.mean(1)))
                continue
            r = cfg.reward_alpha * logp.mean(1)
            if cfg.exact_match:
                hits = [
                    float(_greedy_title(reasoner, prefix[j : j + 1], trie, eos_token_id) == _target(s))
                    for j in range(prefix.shape[0])
                ]
                r = r + cfg.reward_beta * torch.tensor(hits, device=r.device)
            rows.append(r)
        rewards = torch.stack(rows)
    adv = advantages(rewards, cfg.advantage)
    total = 0.0
    for i, s in enumerate(samples):
        logp = reasoner.reference_logprobs(_prompt(s), _target(s), noise[i])  # [K, T]
        mask = torch.ones_like(logp)
        total = total + surrogate(logp, logp.detach(), adv[i], mask, cfg).sum() / mask.sum()
        if cfg.regularisers:
            total = total + sum(reasoner.head.regularisers().values(), torch.tensor(0.0))
    return total


def _greedy_title(reasoner: LatentReasoner, prefix: torch.Tensor, trie, eos_token_id) -> list[int]:
    from latentrec.llm.decoding import constrained_beam_search

    hyps = constrained_beam_search(
        reasoner.llm,
        None,
        trie,
        prefix_embeds=prefix,
        num_beams=1,
        num_return=1,
        max_new_tokens=trie.max_depth,
        eos_token_id=eos_token_id,
    )
    return trie.sequence(hyps[0][0][0])


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


def step_stats(stats: list[dict], accelerator, summed=SUMMED_STATS) -> dict[str, float]:
    """One optimiser step's stats over all processes: `summed` keys summed over its micro-steps and ranks,
    the others (this rank's means, over equal sample counts) averaged over micro-steps and ranks."""
    keys = list(stats[0])
    local = [
        float(np.sum([x[k] for x in stats])) if k in summed else float(np.mean([x[k] for x in stats])) for k in keys
    ]
    total = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=accelerator.device), reduction="sum")
    world = accelerator.num_processes
    return {k: float(v) if k in summed else float(v) / world for k, v in zip(keys, total.tolist())}


def train_lr_grpo(
    model: LatentReasoner,
    tokenizer,
    train: list[EncodedSample],
    valid: list[EncodedSample],
    cfg: LRGRPOConfig,
    log_every: int = 1,
    catalog: list[list[int]] | None = None,
    out_dir=None,
    tracking_kind: str = "none",
    run_name: str = "lr-grpo",
) -> dict:
    """Train the head in place (the whole model with ``rollout="decode"`` or ``"beams"``, the original GRPO,
    which needs the ``catalog`` token sequences); returns a log (per-step rewards, loss, gradient norm,
    validation -PPL before and after, seconds). `tracking_kind` (llm.tracking) logs each step's entry to
    out_dir/tracking/`run_name` as it comes."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    full_model = cfg.whole_model
    for p in model.llm.parameters():
        p.requires_grad_(full_model)
    for p in model.head.auxiliary_parameters():  # only the regularisers use them: trainable iff those are in the loss
        p.requires_grad_(cfg.regularisers)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"latent head {model.head.kind!r} has no parameters to train with RL")
    trie = None
    if cfg.needs_catalog:
        from latentrec.llm.trie import TitleTrie

        if catalog is None:
            raise ValueError(
                f"rollout={cfg.rollout!r} and the hybrid reward's exact match need the catalog token sequences"
            )
        trie = TitleTrie.build(catalog, vocab_size=model.llm.get_input_embeddings().num_embeddings)
    if tracking_kind != "none" and out_dir is None:
        raise ValueError("tracking needs out_dir, the run's output folder")
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        **tracking.accelerator_options(tracking_kind, out_dir),
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    groups = cfg.baseline_groups
    if groups % world:
        raise ValueError(
            f"advantage_groups {groups} (samples sharing a baseline) must be a multiple of the process count {world}"
        )
    per_rank = groups // world
    per_forward = cfg.forward_samples or per_rank
    if per_rank % per_forward:
        raise ValueError(
            f"forward_samples {per_forward} must divide the samples sharing a baseline on each process "
            f"(advantage_groups / processes = {per_rank})"
        )
    micro_steps = cfg.groups_per_step // groups
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
    # One noise stream for the whole step, the same on every process, each taking its samples' rows: the
    # draws do not depend on the process count (the reference seeds each GPU apart, 42 + rank, so its
    # results change with the number of GPUs).
    noise_gen = torch.Generator().manual_seed(cfg.seed * 1000)
    hidden = model.llm.config.hidden_size

    tracking.start(accelerator, tracking_kind, out_dir, run_name, asdict(cfg))
    before = valid_neg_ppl(model, valid, pad)
    tracking.log(accelerator, "valid", {"neg_ppl": before}, 0)
    history, step, t0 = [], 0, time.time()
    bar = progress(total=total_steps, desc="lr-grpo", unit="step", disable=not accelerator.is_main_process)
    for epoch in range(cfg.max_epochs):
        order = np.random.default_rng(cfg.seed + epoch).permutation(len(train))
        for s in range(steps_per_epoch):
            if step >= total_steps:
                break
            wrapped.train()
            t_step = time.time()
            chunk = order[s * cfg.groups_per_step : (s + 1) * cfg.groups_per_step]
            stats = []
            for m in range(micro_steps):
                ids = chunk[m * groups : (m + 1) * groups]
                mine = ids[rank * per_rank : (rank + 1) * per_rank]
                noise = draw_noise(len(ids), cfg, model.n_latents, hidden, noise_gen, accelerator.device)[
                    rank * per_rank : (rank + 1) * per_rank
                ]
                pieces = [slice(i, i + per_forward) for i in range(0, per_rank, per_forward)]
                batches = [
                    {
                        k: v.to(accelerator.device)
                        for k, v in collate_prompt_target([train[i] for i in mine[p]], pad).items()
                    }
                    for p in pieces
                ]
                adv = None
                if len(pieces) > 1:  # the advantages over all of them first, then the loss forwards piece by piece
                    with accelerator.autocast():
                        adv = scored_advantages(
                            wrapped,
                            batches,
                            [noise[p] for p in pieces],
                            cfg,
                            gather=accelerator.gather,
                            rank_slice=slice(rank * per_rank, (rank + 1) * per_rank),
                            trie=trie,
                        )
                for p, batch in zip(pieces, batches):
                    sync = m == micro_steps - 1 and p is pieces[-1]
                    ctx = accelerator.no_sync(wrapped) if (world > 1 and not sync) else contextlib.nullcontext()
                    with ctx, accelerator.autocast():
                        if full_model:
                            loss, st = decode_step_loss(wrapped, batch, noise[p], trie, cfg, tokenizer.eos_token_id)
                        else:
                            loss, st = step_loss(
                                wrapped,
                                batch,
                                noise[p],
                                cfg,
                                gather=accelerator.gather,
                                rank_slice=slice(rank * per_rank, (rank + 1) * per_rank),
                                ref_head=ref_head,
                                trie=trie,
                                adv=None if adv is None else adv[p],
                            )
                        # DDP averages over ranks: scale so the step's loss is the mean over all its samples.
                        accelerator.backward(loss * world / cfg.groups_per_step)
                    # the step's loss is the sum of these over micro-steps and processes; tokens: prompt + target
                    tokens = float(batch["prompt_mask"].sum() + batch["target_mask"].sum())
                    stats.append({**st, "loss": float(loss.detach()) / cfg.groups_per_step, "tokens": tokens})
            grad_norm = accelerator.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            st = step_stats(stats, accelerator, summed=(*SUMMED_STATS, "loss", "tokens"))
            tokens = st.pop("tokens")
            seconds_step = time.time() - t_step
            entry = {
                "step": step,
                "lr": sched.get_last_lr()[0],
                **st,
                "grad_norm": math.nan if grad_norm is None else float(grad_norm),
                "tokens_per_second": tokens / max(seconds_step, 1e-9),
            }
            tracking.log(accelerator, "train", entry, step)
            if step % log_every == 0 or step == total_steps:
                history.append(entry)
    bar.close()
    seconds = time.time() - t0
    after = valid_neg_ppl(model, valid, pad)
    tracking.log(accelerator, "valid", {"neg_ppl": after}, step)
    tracking.finish(accelerator)
    return {
        "config": asdict(cfg),
        "steps": step,
        "seconds": seconds,
        "world_size": world,
        "device": str(accelerator.device),
        "seconds_per_step": seconds / max(step, 1),
        "valid_neg_ppl_before": before,
        "valid_neg_ppl": after,
        "history": history,
        "trainable_parameters": sum(p.numel() for p in params),
        "peak_memory_mb": peak_memory_mb(accelerator.device),
    }

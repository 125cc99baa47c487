"""Training time per optimiser step: LR-GRPO against the original GRPO (LatentR3 appendix F).

Same model (SmolLM2-135M-Instruct + a fresh LatentRATT), same real CDs train rows, same K, the same
optimiser step as `train_lr_grpo` (AdamW, grad-norm clip 1.0), single process:

(i)  LR-GRPO (`rollout: noise`): K Gaussian-perturbed latents per sample, reward -PPL of the target,
     only LatentRATT trained (`step_loss`);
(ii) original GRPO (`rollout: decode`): the same K latents per sample, one greedy catalog-constrained
     title decoded after each, 0/1 exact-match reward, group advantage, the whole model trained
     (`decode_step_loss`).

The two methods alternate step by step over the same span (each on its own copy of the model), so load
from other processes falls on both alike; only the loop is timed (model copies, trie, optimisers are
set up before). Prints wall and process-CPU seconds per step of each (median) and their ratios, with
the load average. On a shared machine run it with --threads 1 and read the CPU-second ratio.

    PYTHONPATH=src .venv/bin/python bench/grpo_training_time.py --groups 2 --steps 3
    PYTHONPATH=src .venv/bin/python bench/grpo_training_time.py --quick
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.grpo import LRGRPOConfig, decode_step_loss, draw_noise, step_loss  # noqa: E402
from latentrec.llm.latent import collate_prompt_target, new_reasoner  # noqa: E402
from latentrec.llm.recommender import catalog_sequences, encode_split  # noqa: E402
from latentrec.llm.trie import TitleTrie  # noqa: E402


class Method:
    """One method's model copy, optimiser and step (the body of `train_lr_grpo`'s loop)."""

    def __init__(self, fresh, cfg: LRGRPOConfig, trie, eos: int):
        self.model, self.cfg, self.trie, self.eos = copy.deepcopy(fresh), cfg, trie, eos
        for p in self.model.llm.parameters():
            p.requires_grad_(cfg.whole_model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(0)
        self.rewards = []

    def step(self, batch) -> None:
        cfg, model = self.cfg, self.model
        model.train()
        noise = draw_noise(
            batch["prompt_ids"].shape[0], cfg, model.n_latents, model.llm.config.hidden_size, self.gen, "cpu"
        )
        if cfg.whole_model:
            loss, st = decode_step_loss(model, batch, noise, self.trie, cfg, self.eos)
        else:
            loss, st = step_loss(model, batch, noise, cfg)
        (loss / cfg.groups_per_step).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.rewards.append(st["reward"])


def main() -> None:
    ap = _setup.parser(__doc__)
    ap.add_argument("--groups", type=int, default=2, help="samples per optimiser step (groups_per_step)")
    ap.add_argument("--k", type=int, default=8, help="latents (LR-GRPO) or completions (GRPO) per sample")
    ap.add_argument("--steps", type=int, default=3, help="optimiser steps timed per method")
    ap.add_argument("--quick", action="store_true", help="1 sample, K=4, 1 step: a smoke run")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.groups, args.k, args.steps = 1, 4, 1
    llm, tok, ds = _setup.load(args)
    fresh = new_reasoner(llm, tok, seed=0)
    train = encode_split(ds, "train", tok, "musics", limit=args.groups * (args.steps + 1), sample_seed=0)
    catalog = catalog_sequences(ds, tok)
    trie = TitleTrie.build(catalog, vocab_size=fresh.llm.get_input_embeddings().num_embeddings)
    base = dict(group_size=args.k, groups_per_step=args.groups, advantage_groups=args.groups, warmup_steps=0, lr=1e-4)
    methods = {
        "LR-GRPO": Method(fresh, LRGRPOConfig.from_dict(base), trie, tok.eos_token_id),
        "original GRPO": Method(
            fresh,
            LRGRPOConfig.from_dict({**base, "rollout": "decode", "advantage": "group", "lr": 1e-5}),
            trie,
            tok.eos_token_id,
        ),
    }
    batches = [
        collate_prompt_target(train[i * args.groups : (i + 1) * args.groups], tok.pad_token_id)
        for i in range(args.steps + 1)
    ]
    print(
        f"{args.groups} samples/step x K={args.k}, {args.steps} timed steps (+1 warm-up), {len(catalog)} catalog "
        f"titles, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    for m in methods.values():  # warm-up step, not timed
        m.step(batches[-1])
    names = list(methods)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    load = [os.getloadavg()]
    for s in range(args.steps):
        for name in names[s % 2 :] + names[: s % 2]:
            w0, c0 = time.perf_counter(), time.process_time()
            methods[name].step(batches[s])
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
        load.append(os.getloadavg())
    out = {
        "groups": args.groups,
        "k": args.k,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "load_average_per_step": load,
    }
    for name in names:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        out[name] = {
            "wall_s_per_step": w,
            "cpu_s_per_step": c,
            "wall_s": wall[name],
            "cpu_s": cpu[name],
            "trainable_parameters": sum(p.numel() for p in methods[name].params),
        }
        print(
            f"{name}: {w:.2f} s/step wall, {c:.2f} CPU s/step (median of {args.steps}), "
            f"{out[name]['trainable_parameters']:,} trainable parameters",
            flush=True,
        )
    rw = out["original GRPO"]["wall_s_per_step"] / out["LR-GRPO"]["wall_s_per_step"]
    rc = out["original GRPO"]["cpu_s_per_step"] / out["LR-GRPO"]["cpu_s_per_step"]
    out["ratio_wall"], out["ratio_cpu"] = rw, rc
    print(f"original GRPO / LR-GRPO per step: {rw:.2f}x wall, {rc:.2f}x CPU; load average per step {load}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Training time per optimiser step: LR-GRPO against the original GRPO (LatentR3 appendix F).

Same model (SmolLM2-135M-Instruct + a fresh LatentRATT), same real CDs train rows, same K, measured
side by side in one run with the training loop the workflow uses (`train_lr_grpo`):

(i)  LR-GRPO (`rollout: noise`): K Gaussian-perturbed latents per sample, reward -PPL of the target,
     only LatentRATT trained;
(ii) original GRPO (`rollout: decode`): the same K latents per sample, one greedy catalog-constrained
     title decoded after each, 0/1 exact-match reward, group advantage, the whole model trained.

Prints wall and process-CPU seconds per step of each and their ratios (the paper reports the original
GRPO's training as far slower; appendix F). On a shared machine, run it with --threads 1 and read the
CPU-second ratio: it does not depend on what else runs.

    PYTHONPATH=src .venv/bin/python bench/grpo_training_time.py --groups 2 --steps 2
"""

from __future__ import annotations

import copy
import time

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.grpo import LRGRPOConfig, train_lr_grpo  # noqa: E402
from latentrec.llm.latent import new_reasoner  # noqa: E402
from latentrec.llm.recommender import catalog_sequences, encode_split  # noqa: E402


def main() -> None:
    ap = _setup.parser(__doc__)
    ap.add_argument("--groups", type=int, default=2, help="samples per optimiser step (groups_per_step)")
    ap.add_argument("--k", type=int, default=8, help="latents (LR-GRPO) or completions (GRPO) per sample")
    ap.add_argument("--steps", type=int, default=2, help="optimiser steps timed per method")
    args = ap.parse_args()
    llm, tok, ds = _setup.load(args)
    fresh = new_reasoner(llm, tok, seed=0)
    train = encode_split(ds, "train", tok, "musics", limit=args.groups * args.steps, sample_seed=0)
    valid = encode_split(ds, "valid", tok, "musics", limit=1)
    catalog = catalog_sequences(ds, tok)
    base = dict(group_size=args.k, groups_per_step=args.groups, advantage_groups=args.groups,
                max_steps=args.steps, warmup_steps=0, lr=1e-4)
    runs = {"LR-GRPO": LRGRPOConfig.from_dict(base),
            "original GRPO": LRGRPOConfig.from_dict({**base, "rollout": "decode", "advantage": "group", "lr": 1e-5})}
    print(f"{args.groups} samples/step x K={args.k}, {args.steps} steps, {len(catalog)} catalog titles, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    wall, cpu = {}, {}
    for name, cfg in runs.items():
        c0 = time.process_time()  # includes two one-row validation passes: negligible next to a step
        log = train_lr_grpo(copy.deepcopy(fresh), tok, train, valid, cfg, catalog=catalog)
        cpu[name] = (time.process_time() - c0) / log["steps"]
        wall[name] = log["seconds_per_step"]
        print(f"{name}: {wall[name]:.2f} s/step wall, {cpu[name]:.2f} CPU s/step, "
              f"{log['trainable_parameters']:,} trainable parameters, "
              f"mean reward {sum(h['reward'] for h in log['history']) / len(log['history']):.4g}", flush=True)
    print(f"original GRPO / LR-GRPO per step: {wall['original GRPO'] / wall['LR-GRPO']:.2f}x wall, "
          f"{cpu['original GRPO'] / cpu['LR-GRPO']:.2f}x CPU")


if __name__ == "__main__":
    main()

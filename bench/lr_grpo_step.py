"""One LR-GRPO optimiser step: the shared-prompt KV cache against the naive full recomputation.

Same model (SmolLM2-135M-Instruct + a fresh LatentRATT), same samples (real CDs train rows, the
LatentR3 prompt), same noise, K = 8 latent draws per sample, measured side by side in one run:

(i)  naive, as the reference computes it: per sample, K rows of prompt + latent + target, each latent
     from its own pass over the prompt, once without gradient (rewards) and once with (loss);
(ii) ours: per micro-step, the prompts once without gradient, the latent once per prompt, then ONE
     forward of K rows x (latent + target) reusing the prompt's KV cache for rewards and loss.

Prints seconds per optimiser step of each, the speed-up, the loss of each and the largest gradient
difference (the two must agree).

    PYTHONPATH=src .venv/bin/python bench/lr_grpo_step.py --groups 4
"""

from __future__ import annotations

import time

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.grpo import LRGRPOConfig, draw_noise, reference_step, step_loss  # noqa: E402
from latentrec.llm.latent import collate_prompt_target, new_reasoner  # noqa: E402
from latentrec.llm.recommender import encode_split  # noqa: E402


def main() -> None:
    ap = _setup.parser(__doc__)
    ap.add_argument("--groups", type=int, default=4, help="samples per optimiser step (groups_per_step)")
    ap.add_argument("--k", type=int, default=8, help="latent draws per sample")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    llm, tok, ds = _setup.load(args)
    model = new_reasoner(llm, tok, seed=0)
    for p in model.llm.parameters():
        p.requires_grad_(False)
    samples = encode_split(ds, "train", tok, "musics", limit=args.groups, sample_seed=0)
    cfg = LRGRPOConfig(group_size=args.k, groups_per_step=args.groups, advantage_groups=2)
    noise = draw_noise(args.groups, cfg, 1, llm.config.hidden_size, torch.Generator().manual_seed(0), "cpu")
    prompt_tokens = sum(s.prompt_len for s in samples) / len(samples)
    target_tokens = sum(len(s.input_ids) - s.prompt_len for s in samples) / len(samples)
    print(f"{args.groups} samples x K={args.k}; mean prompt {prompt_tokens:.0f} tokens, target {target_tokens:.1f}; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    def fast():
        model.zero_grad()
        total = 0.0
        for m in range(0, args.groups, cfg.advantage_groups):
            part = samples[m : m + cfg.advantage_groups]
            loss, _ = step_loss(model, collate_prompt_target(part, tok.pad_token_id), noise[m : m + len(part)], cfg)
            (loss / args.groups).backward()
            total += float(loss) / args.groups
        return total, {n: p.grad.clone() for n, p in model.head.named_parameters()}

    def naive():
        model.zero_grad()
        total = 0.0
        for m in range(0, args.groups, cfg.advantage_groups):
            part = samples[m : m + cfg.advantage_groups]
            loss = reference_step(model, part, noise[m : m + len(part)], cfg)
            (loss / args.groups).backward()
            total += float(loss) / args.groups
        return total, {n: p.grad.clone() for n, p in model.head.named_parameters()}

    times = {"naive": [], "fast": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("naive", naive), ("fast", fast)):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    t_naive, t_fast = min(times["naive"]), min(times["fast"])
    (l_naive, g_naive), (l_fast, g_fast) = results["naive"], results["fast"]
    grad_diff = max(float((g_naive[n] - g_fast[n]).abs().max()) for n in g_naive)
    grad_scale = max(float(g_naive[n].abs().max()) for n in g_naive)
    print(f"naive (reference passes): {t_naive:.2f} s/step")
    print(f"ours (shared prompt KV):  {t_fast:.2f} s/step")
    print(f"speed-up: {t_naive / t_fast:.2f}x")
    print(f"loss naive {l_naive:.6g}  ours {l_fast:.6g}  |diff| {abs(l_naive - l_fast):.2e}")
    print(f"max |grad diff| {grad_diff:.2e} (max |grad| {grad_scale:.2e})")


if __name__ == "__main__":
    main()

"""One FLR-GRPO optimiser step: the shared-prompt KV cache and teacher-forced exact match against a naive step.

Same model (SmolLM2-135M-Instruct + a fresh FLR head, K = 3 factors, T = 2 refinements), same samples
(real CDs train rows, the LatentR3 prompt), same noise, G = 8 thought draws per sample, the CDs catalog
as the decoding constraint, measured side by side in one run:

(i)  naive: per sample, G rows of prompt + thought + target, every refinement of every thought from its
     own full pass; once without gradient for the rewards, each draw's exact match from its own beam-1
     constrained beam search (one prefill of [prompt, noisy thought] per draw); then again with gradient;
(ii) ours: per micro-step the prompts once, the T refinements once per prompt on the prompt's KV cache,
     ONE forward of G rows x (thought + target) for rewards and loss; the exact match of every draw's
     greedy constrained decode is read off that forward's teacher-forced logits (the decode returns the
     target iff the target token is the constrained argmax at every target prefix), so no decode runs.

Prints seconds per optimiser step of each, the speed-up, the loss of each, the largest gradient difference
(the two must agree) and the exact-match rate.

    PYTHONPATH=src .venv/bin/python bench/flr_grpo_step.py --groups 4
"""

from __future__ import annotations

import time

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.grpo import LRGRPOConfig, draw_noise, reference_step, step_loss  # noqa: E402
from latentrec.llm.latent import collate_prompt_target, new_reasoner  # noqa: E402
from latentrec.llm.recommender import catalog_sequences, encode_split  # noqa: E402
from latentrec.llm.trie import TitleTrie  # noqa: E402


def main() -> None:
    ap = _setup.parser(__doc__)
    ap.add_argument("--groups", type=int, default=4, help="samples per optimiser step (groups_per_step)")
    ap.add_argument("--g", type=int, default=8, help="thought draws per sample")
    ap.add_argument("--factors", type=int, default=3)
    ap.add_argument("--refine", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    load_average = _setup.LoadAverage()
    llm, tok, ds = _setup.load(args)
    model = new_reasoner(
        llm, tok, head="flr", head_options={"n_factors": args.factors}, refine_steps=args.refine, seed=0
    ).to(args.device)
    for p in model.llm.parameters():
        p.requires_grad_(False)
    samples = encode_split(ds, "train", tok, "musics", limit=args.groups, sample_seed=0)
    catalog = catalog_sequences(ds, tok)
    trie = TitleTrie.build(catalog, vocab_size=model.llm.get_input_embeddings().num_embeddings).to(args.device)
    cfg = LRGRPOConfig(
        group_size=args.g,
        groups_per_step=args.groups,
        advantage_groups=2,
        reward="hybrid",
        advantage="base",
        regularisers=True,
    )
    noise = draw_noise(args.groups, cfg, 1, llm.config.hidden_size, torch.Generator().manual_seed(0), args.device)
    prompt_tokens = sum(s.prompt_len for s in samples) / len(samples)
    target_tokens = sum(len(s.input_ids) - s.prompt_len for s in samples) / len(samples)
    print(
        f"{args.groups} samples x G={args.g}; K={args.factors}, T={args.refine}; mean prompt {prompt_tokens:.0f} "
        f"tokens, target {target_tokens:.1f}; catalog {len(catalog)} titles, trie depth {trie.max_depth}; "
        f"{args.device}, torch threads {torch.get_num_threads()}",
        flush=True,
    )

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def fast():
        model.zero_grad()
        total, hits = 0.0, []
        for m in range(0, args.groups, cfg.advantage_groups):
            part = samples[m : m + cfg.advantage_groups]
            batch = {k: v.to(args.device) for k, v in collate_prompt_target(part, tok.pad_token_id).items()}
            loss, st = step_loss(model, batch, noise[m : m + len(part)], cfg, trie=trie)
            (loss / args.groups).backward()
            total += float(loss.detach()) / args.groups
            hits.append(st["exact_match"])
        sync()
        return total, {n: p.grad.clone() for n, p in model.head.named_parameters()}, sum(hits) / len(hits)

    def naive():
        model.zero_grad()
        total = 0.0
        for m in range(0, args.groups, cfg.advantage_groups):
            part = samples[m : m + cfg.advantage_groups]
            loss = reference_step(model, part, noise[m : m + len(part)], cfg, trie=trie, eos_token_id=tok.eos_token_id)
            (loss / args.groups).backward()
            total += float(loss.detach()) / args.groups
        sync()
        return total, {n: p.grad.clone() for n, p in model.head.named_parameters()}, None

    times = {"naive": [], "fast": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("naive", naive), ("fast", fast)):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    t_naive, t_fast = min(times["naive"]), min(times["fast"])
    (l_naive, g_naive, _), (l_fast, g_fast, hit_rate) = results["naive"], results["fast"]
    grad_diff = max(float((g_naive[n] - g_fast[n]).abs().max()) for n in g_naive)
    grad_scale = max(float(g_naive[n].abs().max()) for n in g_naive)
    print(f"naive (full passes, one decode per draw): {t_naive:.2f} s/step")
    print(f"ours (shared prompt KV, no decode):       {t_fast:.2f} s/step")
    print(f"speed-up: {t_naive / t_fast:.2f}x")
    print(f"loss naive {l_naive:.6g}  ours {l_fast:.6g}  |diff| {abs(l_naive - l_fast):.2e}")
    print(f"max |grad diff| {grad_diff:.2e} (max |grad| {grad_scale:.2e}); exact-match rate {hit_rate:.3f}")
    print(load_average.line())


if __name__ == "__main__":
    main()

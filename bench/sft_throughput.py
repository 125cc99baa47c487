"""SFT throughput of our trainer's step on real CDs prompts, and the padding that batching costs.

Times what ``latentrec.llm.sft.train_sft`` does per optimiser step (collate, forward, summed
target-token cross-entropy, backward, clip, AdamW step) on the BIGRec/D3 prompt of CDs train rows,
with the trainer's own pieces (``collate``, ``length_grouped_batches``, ``SFTTask``); reports
tokens/s (real tokens, i.e. non-padding, the figure ``train_log.json`` reports, and padded tokens;
wall clock, and per second of process CPU time, which other load on a shared machine does not inflate) and
the padding ratio (padded / real tokens) of length-grouped against random micro-batches over the
whole train split.

    PYTHONPATH=src .venv/bin/python bench/sft_throughput.py --threads 1 --steps 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from latentrec.data.processed_io import import_csv_dataset  # noqa: E402
from latentrec.llm.backbone import load_backbone  # noqa: E402
from latentrec.llm.recommender import encode_split  # noqa: E402
from latentrec.llm.sft import SFTTask, collate, length_grouped_batches  # noqa: E402

DEFAULT_SPLIT = ROOT.parent / "shared" / "data" / "amazon2018" / "CDs_and_Vinyl_5_2015-10-2018-11"
DEFAULT_MODEL_DIR = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"


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
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ds = import_csv_dataset(args.split)
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
    print(f"{len(train)} train prompts (tokens: mean {np.mean(lengths):.1f}, max {max(lengths)}); micro-batch "
          f"{args.micro_batch}: padded/real tokens {pad_grouped:.3f} length-grouped, {pad_random:.3f} random", flush=True)

    task = SFTTask()
    params = task.trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=3e-4)
    pad = tok.pad_token_id

    def micro_step(idx, n_target_tokens):
        batch = collate([train[i] for i in idx], pad)
        loss_sum, _ = task.loss_sum(model, batch)
        (loss_sum / n_target_tokens).backward()
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()

    micro_step(grouped[0], 1)  # warm-up (allocations), not timed
    opt.zero_grad(set_to_none=True)
    real = padded = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(args.steps):
        group = grouped[1 + s * args.accum : 1 + (s + 1) * args.accum]
        n_target = sum(len(train[i].input_ids) - train[i].prompt_len for b in group for i in b)
        for idx in group:
            r, p = micro_step(idx, n_target)
            real, padded = real + r, padded + p
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {
        "threads": torch.get_num_threads(), "micro_batch": args.micro_batch, "accum": args.accum, "steps": args.steps,
        "seconds": seconds, "cpu_seconds": cpu, "seconds_per_step": seconds / args.steps,
        "real_tokens_per_cpu_s": real / cpu,
        "real_tokens_per_s": real / seconds, "padded_tokens_per_s": padded / seconds,
        "samples_per_s": args.steps * args.accum * args.micro_batch / seconds,
        "padding_ratio_length_grouped": pad_grouped, "padding_ratio_random": pad_random,
    }
    print(f"{args.steps} steps of {args.accum} x {args.micro_batch} samples, {result['threads']} thread(s): "
          f"{result['real_tokens_per_s']:.0f} tokens/s ({result['padded_tokens_per_s']:.0f} with padding), "
          f"{result['samples_per_s']:.2f} samples/s, {result['seconds_per_step']:.1f} s/step; "
          f"{result['real_tokens_per_cpu_s']:.0f} tokens per process-CPU second (load from other processes aside)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Seconds per SASRec epoch on the CDs split, and where the time goes.

Usage:  .venv/bin/python bench/sasrec_epoch.py [--loss ce] [--epochs 2] [--threads 1] [--op-steps 20] [--data PATH]
        [--json PATH]

Trains SASRec (default hyperparameters; `--loss ce`, the SASRec-CE of the configs, full softmax over
the catalog, by default; `--loss bce` the papers' BCE against sampled negatives) for a fixed number of
epochs (early stopping off) under
cProfile, then prints seconds per epoch, the split of each epoch into batch construction (indexing
the precomputed padded history matrix, gathering targets/negatives), forward+backward+optimiser
step, and validation full ranking, plus the cProfile top 15 by cumulative time. Then a torch
profiler pass over `--op-steps` training steps of the same model says which operators the
forward+backward+step time goes to (self CPU time per operator, top 12).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _setup  # first: it puts src/ on sys.path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default=str(_setup.DEFAULT_SPLIT),
        help="a split in the reference CSV format (default: the CDs split beside the repository)",
    )
    ap.add_argument("--loss", choices=["ce", "bce"], default="ce", help="SASRec's training loss (default %(default)s)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest for this model on a shared CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--op-steps", type=int, default=20, help="training steps under the torch profiler (0: skip)")
    args = ap.parse_args(argv)
    load = _setup.LoadAverage()

    if not Path(args.data).is_dir():
        print(f"skipped: dataset folder {args.data} is absent (the shared data beside the repository)")
        return 0

    from latentrec.baselines.registry import build
    from latentrec.data.processed_io import import_csv_dataset

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    ds = import_csv_dataset(args.data)
    print(
        f"loaded {args.data}: {ds.n_items} items, {len(ds.train)} train / {len(ds.valid)} valid / "
        f"{len(ds.test)} test rows in {time.perf_counter() - t:.1f}s; torch threads {torch.get_num_threads()}"
    )

    model = build("sasrec", {"max_epochs": args.epochs, "patience": args.epochs + 1, "loss": args.loss}, seed=args.seed)
    prof = cProfile.Profile()
    cpu0 = time.process_time()
    prof.enable()
    log = model.fit(ds)
    prof.disable()
    cpu = time.process_time() - cpu0

    print(
        f"\nSASRec ({args.loss}) {log['n_parameters']:,} parameters, batch_size {log['params']['batch_size']}, "
        f"{log['epochs_run']} epochs, fit total {log['total_seconds']:.2f}s (under cProfile)"
    )
    print(
        f"{'epoch':>5} {'seconds':>8} {'batch build':>12} {'fwd+bwd+step':>13} {'valid rank':>11} {'loss':>8} {'vNDCG@10':>9}"
    )
    for i in range(log["epochs_run"]):
        print(
            f"{i + 1:>5} {log['epoch_seconds'][i]:>8.2f} {log['batch_seconds'][i]:>12.3f} "
            f"{log['compute_seconds'][i]:>13.2f} {log['eval_seconds'][i]:>11.2f} "
            f"{log['train_loss'][i]:>8.4f} {log['valid_ndcg@10'][i]:>9.4f}"
        )
    b, c = float(np.sum(log["batch_seconds"])), float(np.sum(log["compute_seconds"]))
    print(
        f"seconds/epoch: {np.mean(log['epoch_seconds']):.2f} wall, {cpu / log['epochs_run']:.2f} CPU "
        "(process CPU time: what a busy, shared machine does not inflate)"
    )
    print(
        f"batch construction / (forward+backward+step) = {b:.3f}s / {c:.2f}s = {b / c:.4f} "
        f"({100 * b / (b + c):.2f}% of training-loop time)"
    )

    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(15)
    print("\ncProfile, top 15 by cumulative time:")
    print(out.getvalue())
    ops = op_profile(model, ds, args.op_steps, int(log["params"]["batch_size"]), args.seed) if args.op_steps else []
    print(load.line())
    if args.json:
        result = {
            "loss": args.loss,
            "threads": torch.get_num_threads(),
            "epochs": log["epochs_run"],
            "n_parameters": log["n_parameters"],
            "batch_size": log["params"]["batch_size"],
            "epoch_seconds": log["epoch_seconds"],
            "cpu_seconds_per_epoch": cpu / log["epochs_run"],
            "batch_seconds": log["batch_seconds"],
            "compute_seconds": log["compute_seconds"],
            "eval_seconds": log["eval_seconds"],
            "top_ops": ops,
            "under_cprofile": True,
            **load.fields(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def op_profile(rec, ds, steps: int, batch_size: int, seed: int) -> list[dict]:
    """Self CPU time per torch operator over `steps` training steps with the model's own loss (batches
    built as in fit()); returns the top 12 operators."""
    from torch.profiler import profile

    from latentrec.baselines.sequential import batch_loss

    model = rec.model
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    hist = rec._matrix(ds.train)
    target = torch.as_tensor(ds.train["item_id"].to_numpy(copy=True), dtype=torch.int64)

    def step(i):
        idx = torch.randint(0, len(target), (batch_size,), generator=gen)
        neg = torch.randint(0, ds.n_items, (batch_size, int(rec.hp["n_negatives"])), generator=gen)
        loss = batch_loss(model, hist[idx], target[idx], neg, rec.hp["loss"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    with profile() as prof:
        for i in range(steps):
            step(i)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"\ntorch profiler, {steps} training steps of {batch_size} rows, "
        f"{total / steps / 1000:.1f} ms self CPU per step; operators by self CPU time:"
    )
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    for e in top:
        print(f"  {e.key:<40} {100 * e.self_cpu_time_total / total:6.2f}%  {e.count // steps:>4} calls/step")
    drop = sum(e.self_cpu_time_total for e in events if e.key in ("aten::bernoulli_", "aten::uniform_"))
    print(f"dropout masks (aten::bernoulli_/uniform_): {100 * drop / total:.1f}% of the step")
    return [
        {"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls_per_step": e.count // steps} for e in top
    ]


if __name__ == "__main__":
    sys.exit(main())

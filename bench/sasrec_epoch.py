"""Seconds per SASRec epoch on the CDs split, and where the time goes.

Usage:  PYTHONPATH=src .venv/bin/python bench/sasrec_epoch.py [--epochs 2] [--threads 2] [--data PATH]

Trains SASRec (default hyperparameters) for a fixed number of epochs (early stopping off) under
cProfile, then prints seconds per epoch, the split of each epoch into batch construction (indexing
the precomputed padded history matrix, gathering targets/negatives), forward+backward+optimiser
step, and validation full ranking, plus the cProfile top 15 by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = "/work/shared/data/amazon2018/CDs_and_Vinyl_5_2015-10-2018-11"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if not Path(args.data).is_dir():
        print(f"skipped: dataset folder {args.data} is absent (needs /work/shared)")
        return 0

    from latentrec.baselines.base import build
    from latentrec.data.processed_io import import_csv_dataset

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    ds = import_csv_dataset(args.data)
    print(f"loaded {args.data}: {ds.n_items} items, {len(ds.train)} train / {len(ds.valid)} valid / "
          f"{len(ds.test)} test rows in {time.perf_counter() - t:.1f}s; torch threads {torch.get_num_threads()}")

    model = build("sasrec", {"max_epochs": args.epochs, "patience": args.epochs + 1}, seed=args.seed)
    prof = cProfile.Profile()
    prof.enable()
    log = model.fit(ds)
    prof.disable()

    print(f"\nSASRec {log['n_parameters']:,} parameters, batch_size {log['params']['batch_size']}, "
          f"{log['epochs_run']} epochs, fit total {log['total_seconds']:.2f}s (under cProfile)")
    print(f"{'epoch':>5} {'seconds':>8} {'batch build':>12} {'fwd+bwd+step':>13} {'valid rank':>11} {'loss':>8} {'vNDCG@10':>9}")
    for i in range(log["epochs_run"]):
        print(f"{i + 1:>5} {log['epoch_seconds'][i]:>8.2f} {log['batch_seconds'][i]:>12.3f} "
              f"{log['compute_seconds'][i]:>13.2f} {log['eval_seconds'][i]:>11.2f} "
              f"{log['train_loss'][i]:>8.4f} {log['valid_ndcg@10'][i]:>9.4f}")
    b, c = float(np.sum(log["batch_seconds"])), float(np.sum(log["compute_seconds"]))
    print(f"seconds/epoch: {np.mean(log['epoch_seconds']):.2f}")
    print(f"batch construction / (forward+backward+step) = {b:.3f}s / {c:.2f}s = {b / c:.4f} "
          f"({100 * b / (b + c):.2f}% of training-loop time)")

    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(15)
    print("\ncProfile, top 15 by cumulative time:")
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())

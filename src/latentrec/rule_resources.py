"""What each rule's jobs ask for: one table, RULES, read by the rule files and by `latentrec plan`.

Per rule: its GPUs (an llm.* count of the config), how it uses several (one accelerate process per GPU,
or one process), its memory, its wall time, and how `latentrec plan` costs it. A rule of LLM work names
its FLOP count (latentrec/flops.py) and the MFU that applies; its SLURM runtime is that count for the
job's rows at REQUEST_PEAK / REQUEST_MFU. The other numbers are rules of thumb from the 2-core
development machine (CPU). A retried job (profile `retries`) gets attempt x the memory and time:
out-of-memory and time-outs are the usual reasons to fail on a cluster.

Adding a rule: the rule in its .smk file, asking `job_mem_mb`/`job_runtime` (and `job_gpus`, `gpu_nodes`,
`launcher` for a GPU rule) by its name, and one entry here. tests/test_rule_resources.py keeps the two
in step.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Literal

from latentrec import flops
from latentrec.config import grid_points, method_config
from latentrec.flops import GPU_PEAK_FLOPS, KNOWN_BACKBONES, Backbone, TokenStats, seconds_at

MAX_MEM_MB = 256_000
MAX_RUNTIME_MIN = 7 * 24 * 60

# What a runtime request assumes: an A100 as the slowest GPU a user may get, a 2-core CPU, the plan's
# default MFUs, and the mean token counts `latentrec plan` measured on LatentR3's CDs split; a job is
# sized again at submission, once its inputs exist.
REQUEST_PEAK = {"gpu": GPU_PEAK_FLOPS["a100"], "cpu": 1.0e11}
REQUEST_MFU = {"train": 0.35, "decode": 0.10}
MEAN_TOKENS = {"prompt": 125.0, "target": 10.5}


@dataclass(frozen=True)
class JobFacts:
    """What a resource model may read of one job."""

    config: dict
    wildcards: dict
    input: list  # the job's input files
    gpus: int


@dataclass(frozen=True)
class Cost:
    """LLM work: its FLOP count (a function of latentrec.flops) and the MFU the plan applies to it."""

    flops: Callable[[dict, dict, float, TokenStats], tuple[float, str]]
    mfu: Literal["train", "decode"]


@dataclass(frozen=True)
class RuleResources:
    gpus: str | None = None  # the llm.* key with this rule's GPUs per job; None: a CPU job
    data_parallel: bool = False  # with several GPUs, one accelerate process per GPU (else one process)
    mem_mb: int | Callable[[JobFacts], float] = 4_000
    base_minutes: float = 10  # a CPU job's start-up; `work_s` x2 is added to it
    work_s: Callable[[JobFacts], float] | None = None
    cost: Cost | None = None  # costed by `latentrec plan`; its runtime is the FLOP count's
    step: str | None = None  # the step its jobs repeat, for the plan's memory column (plan_memory.job_step)
    local: bool = False  # `localrule: True`: seconds of work, in the main Snakemake process


# ---- the job facts the models read


def input_mb(files) -> float:
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f)) / 2**20


def table_rows(files, table: str, limit=None) -> int:
    """Rows of the processed `table` among the job's inputs (Parquet footer only), capped by `limit`;
    before the table exists (a dry run) the limit or 10k; resources are evaluated again at submission.
    """
    import pyarrow.parquet as pq

    path = next((f for f in files if os.path.basename(f) == f"{table}.parquet"), None)
    if path is None or not os.path.isfile(path):
        n = 10_000
    else:
        n = pq.ParquetFile(path).metadata.num_rows
    return n if limit is None else min(n, int(limit))


# ---- memory (MB of one attempt) and work (seconds) of the CPU rules


def raw_parse_mb(job: JobFacts) -> float:
    """Raw review dumps are parsed in memory (kept columns only): the synthetic category needs < 1 GB, a
    full category up to 32 GB."""
    return min(32_000, 800 + 16 * input_mb(job.input))


def raw_parse_s(job: JobFacts) -> float:
    return input_mb(job.input) * 3  # ~3 s per MB of gzip JSON: parse, k-core, split


def recommender_mb(job: JobFacts) -> float:
    return 2_000 + 20 * input_mb(job.input)  # title embeddings (AlphaRec) are inputs too


def recommender_s(job: JobFacts) -> float:
    """Epochs x train rows: ~11 s per SASRec epoch on the CDs split (docs/results.md)."""
    cfg = method_config(job.config, job.wildcards["method"])
    params = cfg.get("params", {})
    if "point" in job.wildcards:
        params = grid_points(cfg)[job.wildcards["point"]]
    epochs = 1 if cfg["family"] == "mostpop" else int(params.get("max_epochs", 200))
    return table_rows(job.input, "train") * epochs * 5e-4


def llm_training_mb(job: JobFacts) -> float:
    """The backbone, its optimiser state and one copy per accelerate process (measured 3.4-5.3 GB for
    SmolLM2 SFT on CPU, bench/sft_memory.json)."""
    return 8_000 * max(1, job.gpus) + 8_000


# ---- the table

LOCAL = RuleResources(local=True)
SFT = Cost(flops.sft, "train")
LATENT_SFT = Cost(flops.latent_sft, "train")
LATENT_RL = Cost(flops.latent_rl, "train")
DECODE = Cost(flops.decode_shard, "decode")  # small-batch beam search is memory-bound: the decode MFU
TIMING = Cost(flops.decode_timing, "decode")
FACTORS = Cost(flops.flr_factors, "decode")
TITLES = Cost(flops.title_embeddings, "decode")

RULES: dict[str, RuleResources] = {
    "all": LOCAL,
    # data.smk
    "synthesize_dataset": RuleResources(mem_mb=1_000),
    "download_amazon2018": RuleResources(mem_mb=1_000, base_minutes=240),
    "process_raw_dataset": RuleResources(mem_mb=raw_parse_mb, work_s=raw_parse_s),
    "import_processed_dataset": RuleResources(),
    # baselines.smk
    "item_title_embeddings": RuleResources(gpus="decode_gpus", mem_mb=12_000, cost=TITLES),
    "fit_predict_recommender": RuleResources(mem_mb=recommender_mb, work_s=recommender_s),
    "fit_grid_point": RuleResources(mem_mb=recommender_mb, work_s=recommender_s),
    "select_grid_point": LOCAL,
    # llm.smk
    "fetch_model": RuleResources(base_minutes=60),
    "sft_backbone": RuleResources(gpus="sft_gpus", data_parallel=True, mem_mb=llm_training_mb, cost=SFT, step="sft"),
    "select_sft": LOCAL,
    "decode_llm_shard": RuleResources(gpus="decode_gpus", mem_mb=12_000, cost=DECODE, step="decode"),
    "gather_llm_shards": LOCAL,
    "latent_warmup_sft": RuleResources(
        gpus="sft_gpus", data_parallel=True, mem_mb=llm_training_mb, cost=LATENT_SFT, step="latent_sft"
    ),
    "latent_warmup_point": RuleResources(
        gpus="sft_gpus", data_parallel=True, mem_mb=llm_training_mb, cost=LATENT_SFT, step="latent_sft"
    ),
    "select_latent_warmup": LOCAL,
    "latent_rl_point": RuleResources(
        gpus="rl_gpus", data_parallel=True, mem_mb=llm_training_mb, cost=LATENT_RL, step="latent_rl"
    ),
    "select_latent_rl": LOCAL,
    "flr_factors": RuleResources(gpus="decode_gpus", mem_mb=12_000, cost=FACTORS),
    "time_inference": RuleResources(gpus="decode_gpus", mem_mb=12_000, cost=TIMING, step="decode"),
    # evaluate.smk
    "evaluate_run": LOCAL,
    "significance_tests": LOCAL,
    "llm_vs_strongest": LOCAL,
    # report.smk
    "report_tables": LOCAL,
    "report_latentr3": LOCAL,
    "report_flr": LOCAL,
}


def resources_of(rule: str) -> RuleResources:
    try:
        return RULES[rule]
    except KeyError:
        raise KeyError(f"rule {rule!r} has no entry in latentrec.rule_resources.RULES") from None


# ---- what one job asks for


def job_gpus(rule: str, config: dict) -> int:
    key = resources_of(rule).gpus
    return int(config["llm"].get(key) or 0) if key else 0


def gpu_nodes(rule: str, config: dict) -> int | None:
    """A job's GPUs all on one node: sbatch --gpus=N alone may spread them over several."""
    return 1 if job_gpus(rule, config) >= 1 else None


def launcher(rule: str, config: dict) -> str:
    """The command prefix of the rule's jobs (local GPU lease; accelerate for data-parallel GPUs)."""
    n_gpus = job_gpus(rule, config)
    if not n_gpus:
        return "python -m latentrec"
    lease = f"python -m latentrec lease-gpus {n_gpus} --"
    if n_gpus == 1 or not resources_of(rule).data_parallel:
        return f"{lease} python -m latentrec"
    # --multi_gpu: without it, a user's accelerate config of one process (distributed_type NO) wins over
    # --num_processes and the job silently runs in one process (docs/gpu_path.md)
    return f"{lease} accelerate launch --multi_gpu --num_processes {n_gpus} -m latentrec"


def mem_mb(rule: str, config: dict, wildcards, input, attempt: int = 1) -> int:
    """Memory (MB) of one job of `rule`."""
    model = resources_of(rule).mem_mb
    if callable(model):
        model = model(JobFacts(config, dict(wildcards.items()), list(input), job_gpus(rule, config)))
    return int(min(MAX_MEM_MB, attempt * model))


def runtime_minutes(rule: str, config: dict, wildcards, input, attempt: int = 1) -> int:
    """Wall-time limit (minutes) of one job of `rule`: LLM work from its FLOP count for the job's rows;
    other rules a start-up plus twice their estimated work."""
    r = resources_of(rule)
    job = JobFacts(config, dict(wildcards.items()), list(input), job_gpus(rule, config))
    if r.cost is not None:
        rows = {split: table_rows(job.input, split) for split in ("train", "valid", "test")}
        return min(
            MAX_RUNTIME_MIN,
            requested_minutes(rule, job.wildcards, config, rows, table_rows(job.input, "items"), job.gpus, attempt),
        )
    work_s = r.work_s(job) if r.work_s else 0.0
    return int(min(MAX_RUNTIME_MIN, attempt * (r.base_minutes + 2 * work_s / 60)))


def slurm_runtime_minutes(seconds: float, safety: float = 2.0, startup_min: float = 10.0) -> int:
    """A SLURM request for a job estimated at `seconds`: safety margin plus start-up, in 15-minute steps."""
    return int(15 * math.ceil((safety * seconds / 60 + startup_min) / 15))


def requested_minutes(
    rule: str, wildcards: dict, config: dict, rows: dict, items: int, gpus: int, attempt: int = 1
) -> int:
    """The SLURM runtime an LLM rule's job asks for: its FLOPs for `rows`, at REQUEST_PEAK / REQUEST_MFU."""
    cost = resources_of(rule).cost
    spec = config["llm"]["models"][config["llm"]["backbone"]]["spec"]
    bb = Backbone.of(*KNOWN_BACKBONES[spec]) if spec in KNOWN_BACKBONES else Backbone.flat(1.5e9)
    st = TokenStats(rows, items, MEAN_TOKENS["prompt"], MEAN_TOKENS["target"], "rule of thumb")
    job_flops, _ = cost.flops(dict(wildcards), config, bb, st)
    seconds = seconds_at(job_flops, gpus, REQUEST_PEAK["gpu" if gpus else "cpu"], REQUEST_MFU[cost.mfu])
    return attempt * slurm_runtime_minutes(seconds)


def check_slurm_account(default_resources) -> None:
    """An empty slurm_account ("") makes the SLURM plugin guess an account from sacct, and fail on a wrong
    guess far from its cause: stop before any job instead."""
    from snakemake.exceptions import WorkflowError

    if default_resources is None or "slurm_account" not in default_resources:
        return
    raw = str(default_resources["slurm_account"].raw).strip().strip("\"'")
    if not raw:
        raise WorkflowError(
            "slurm_account is empty (profiles/slurm/config.yaml default-resources or --default-resources): "
            "write your account there, e.g. `slurm_account: myproject`, or remove the key"
        )

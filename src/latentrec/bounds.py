"""Upper bounds on the config's sizes, checked at DAG build before any job (validate_config calls them).

The schema says what a value may be (an integer >= 1); these say what can work: a value that no machine,
model or split could run would otherwise pass validation and fail, or exhaust memory, inside a job, or
keep Snakemake building a DAG of millions of jobs for minutes. Each bound is derived from a limit of the
run (the model's context, the test rows, the run's `gpu` resource, the machine's memory) where one is
known, else from a documented ceiling; each message names the key path and says why.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os

from latentrec.errors import InputError

# Jobs above this stop the run before Snakemake builds its DAG (~100 jobs/s on a laptop: 10k is minutes of
# "Building DAG of jobs..."; config/paper.yaml, every method on four datasets with 5 seeds, is ~5,400).
# The top-level key `max_jobs` raises it.
MAX_JOBS = 10_000
# The context of a hub model not fetched yet (no config.json to read): the longest of the backbones the
# papers and their successors use (Qwen2.5/Llama 3.x: 32k-128k). Checked exactly once the config is there.
CONTEXT_CEILING = 131_072
# One job's GPUs sit on one node (common.smk gpu_nodes); no node has more.
MAX_GPUS_PER_JOB = 16
# Where a run's memory is unknown at DAG build (a GPU job: the head node may have no GPU), the largest
# single accelerator's memory; CPU jobs use this machine's memory.
GPU_MEMORY_GB = 192
# The analytic estimate below is rough (no allocator slack, no framework overhead, no fragmentation), so a
# config is refused only when it exceeds the memory by this factor: it fails for certain, not maybe.
MEMORY_MARGIN = 4
# Each of these samples/sequences is one row of a forward pass; the papers use 8-128.
MAX_BATCH = 4096  # micro_batch, decode batch_size
MAX_EFFECTIVE_BATCH = 65_536
MAX_BEAMS = 512  # the papers decode 10 beams; each beam is one more sequence in every decode forward
MAX_RL_GROUP = 1024  # group_size: draws of one sample in one forward
MAX_RL_GROUPS_PER_STEP = 65_536
MAX_LATENT_FORWARDS = 1024  # n_latents x refine_steps backbone forwards per sample (the papers: 1-8)
MAX_DECODE_SHARDS = 4096  # without a known test size: each shard loads the backbone once
# Synthetic generator: users are simulated one by one and every review is held in memory.
MAX_SYNTHETIC_USERS = 5_000_000
MAX_SYNTHETIC_ITEMS = 3_000_000  # as many as the largest Amazon 2018 category (Books, ~2.9M)
MAX_SYNTHETIC_REVIEWS_PER_USER = 30  # data/synthetic.py: 5 + at most 25 extra reviews per user
MAX_K_CORE = 100  # no Amazon 2018 category keeps enough users with more reviews than this to split
MAX_HISTORY_LEN = 1000  # the prompt and SASRec's positions hold the history; longer is cut to max_len anyway
MAX_RECOMMENDER_PARAMS = 1_000_000_000  # a score-based model of 1e9 weights is 16 GB of AdamW state alone


def _fail(where: str, msg: str):
    raise InputError(f"config: {where}: {msg} (see config/README.md)")


def _at_most(where: str, value, bound, why: str) -> None:
    if value is not None and value > bound:
        _fail(where, f"must be at most {bound:,}: {why}, got {value:,}")


# ------------------------------------------------------------------------------------------ job count
def estimate_jobs(config: dict) -> int:
    """Jobs the DAG will hold, counted from the config alone (products of lengths, nothing enumerated):
    data jobs per dataset, per (dataset, method, seed) the fits or decode shards plus gather and evaluation,
    per (dataset, seed) the SFT and latent warm-up / RL grid points, and the report jobs."""
    methods = config.get("methods") or {}
    llm = config.get("llm") or {}
    recipes = llm.get("latent") or {}
    seeds = list(config.get("seeds") or [])
    shards = int(llm.get("decode_shards") or 1)
    sft_points = _grid_size(llm.get("sft_grid"))
    total = 10  # all, report and analysis jobs, model fetches
    for d in config.get("run_datasets") or []:
        total += 4  # synthesize / download, process, title embeddings
        trained_seeds, warmups = set(), {}
        for m in config.get("run_methods") or []:
            c = methods.get(m)
            if not isinstance(c, dict) or (c.get("datasets") and d not in c["datasets"]):
                continue
            only = set(c.get("seeds") or [])
            ms = [s for s in seeds if s in only] if only else seeds
            family = c.get("family")
            if family in ("llm", "latent"):
                per_seed = shards + 2
            else:
                points = _grid_size(c.get("grid"))
                per_seed = points + (1 if points > 1 else 0) + 1
            total += len(ms) * per_seed
            if family == "llm" and c.get("tuned", True):
                trained_seeds |= set(ms)
            if family == "latent" and c.get("recipe") in recipes:
                warmups.setdefault(c["recipe"], set()).update(ms)
        total += len(trained_seeds) * (sft_points + (1 if sft_points > 1 else 0))
        for name, rs in warmups.items():
            r = recipes.get(name) or {}
            warm = _grid_size(r["sft_grid"] if "sft_grid" in r else llm.get("sft_grid"))
            rl = _grid_size(r.get("rl_grid")) if r.get("rl") is not None else 0
            total += len(rs) * (warm + (1 if warm > 1 else 0) + rl + (1 if rl else 0))
    return total


def _grid_size(grid) -> int:
    if not isinstance(grid, dict) or not grid:
        return 1
    return math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values())


def check_job_count(config: dict) -> None:
    limit = config.get("max_jobs", MAX_JOBS)
    n = estimate_jobs(config)
    if n > limit:
        _fail(
            "max_jobs",
            f"this config makes about {n:,} jobs (seeds x datasets x methods x grid points x decode "
            f"shards), more than the limit of {limit:,}: Snakemake would spend minutes building the DAG "
            "before the first job; check `seeds`, the grids and llm.decode_shards, or raise `max_jobs` "
            "if you mean it",
        )


# ---------------------------------------------------------------------------------------- the model
def model_config(config: dict, root: str = ".") -> dict | None:
    """The backbone's config.json (hidden size, layers, vocabulary, context), once it is known: the fetched
    folder resources/models/<name>/, or a local spec folder; None for a hub id or package not fetched yet."""
    llm = config.get("llm") or {}
    name = llm.get("backbone")
    spec = str(((llm.get("models") or {}).get(name) or {}).get("spec", ""))
    for folder in (os.path.join(root, "resources", "models", str(name)), os.path.expanduser(spec)):
        path = os.path.join(folder, "config.json")
        if spec and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    cfg = json.load(fh)
            except (OSError, ValueError):
                return None  # the fetch or the load names a damaged file
            return cfg.get("text_config", cfg) if isinstance(cfg, dict) else None
    return None


def model_context(model: dict | None) -> tuple[int, str]:
    """(tokens, where the number comes from)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if model and isinstance(model.get(key), int) and model[key] > 0:
            return model[key], f"the backbone's context ({key} in its config.json)"
    return (
        CONTEXT_CEILING,
        f"the longest context of a supported backbone ({CONTEXT_CEILING:,}; the backbone's own "
        "is checked once its config.json is fetched)",
    )


def _dims(model: dict) -> dict | None:
    try:
        h = int(model.get("hidden_size") or model["n_embd"])
        layers = int(model.get("num_hidden_layers") or model["n_layer"])
        vocab = int(model["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    inter = int(model.get("intermediate_size") or 4 * h)
    heads = int(model.get("num_attention_heads") or 1)
    kv = int(model.get("num_key_value_heads") or heads)
    tied = bool(model.get("tie_word_embeddings", False))
    params = vocab * h * (1 if tied else 2) + layers * (4 * h * h + 3 * h * inter)
    return {"h": h, "layers": layers, "vocab": vocab, "params": params, "kv_dim": h * kv // max(1, heads)}


def estimate_gb(kind: str, dims: dict, *, rows: int, tokens: int, beams: int = 1) -> float:
    """A lower-end analytic memory estimate (GB) of one process, fp32:
    sft: weights, gradients and AdamW state (16 bytes per parameter), plus per token of the micro-batch the
    activations kept for the backward (~16 bytes x hidden per layer) and the logits with their gradient;
    rl: frozen weights, activations and logits of `rows` draws; decode: weights, the KV cache of
    rows x beams sequences and the logits of one step."""
    p, h, L, V = dims["params"], dims["h"], dims["layers"], dims["vocab"]
    n = rows * tokens
    if kind == "sft":
        b = 16 * p + n * (16 * h * L + 8 * V)
    elif kind == "rl":
        b = 4 * p + n * (16 * h * L + 8 * V)
    else:
        b = 4 * p + rows * beams * (tokens * L * 2 * dims["kv_dim"] * 4 + 4 * V)
    return b / 1e9


def machine_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 256.0


def _check_memory(where: str, knob: str, gb: float, gpus: int, base_gb: float = 0.0) -> None:
    """`base_gb`: what the backbone needs at batch size 0; when that alone is too much, no knob helps."""
    limit, what = (
        (GPU_MEMORY_GB, f"the largest GPU's {GPU_MEMORY_GB} GB")
        if gpus
        else (machine_memory_gb(), f"this machine's {machine_memory_gb():.0f} GB")
    )
    if base_gb > MEMORY_MARGIN * limit:
        _fail(
            "llm.backbone",
            f"the backbone alone needs about {base_gb:,.0f} GB per process at {where} (weights"
            f"{' and AdamW state' if 'sft' in where else ''}, from its config.json), more than "
            f"{MEMORY_MARGIN} x {what}; use a smaller backbone" + ("" if gpus else " or GPUs"),
        )
    if gb > MEMORY_MARGIN * limit:
        _fail(
            where,
            f"needs about {gb:,.0f} GB per process (weights, optimiser state, activations and logits "
            f"of the backbone, estimated from its config.json), more than {MEMORY_MARGIN} x {what}; "
            f"lower `{knob}`",
        )


# ------------------------------------------------------------------------------------------ test rows
def test_rows(config: dict, dataset: str, root: str = ".") -> int | None:
    """Rows of the dataset's test split where it exists already: the processed Parquet table (its footer),
    else a processed source's test.csv(.gz) (records counted); None before the data is built."""
    parquet = os.path.join(root, "results", dataset, "data", "test.parquet")
    if os.path.isfile(parquet):
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(parquet).metadata.num_rows
        except Exception:  # noqa: BLE001 - a damaged table is named by the job that reads it
            return None
    d = (config.get("datasets") or {}).get(dataset) or {}
    if d.get("source") == "processed" and d.get("folder"):
        for name, opener in (("test.csv", open), ("test.csv.gz", gzip.open)):
            path = os.path.join(d["folder"], name)
            if os.path.isfile(path):
                try:
                    with opener(path, "rt", encoding="utf-8", newline="") as fh:
                        return max(0, sum(1 for _ in csv.reader(fh)) - 1)
                except (OSError, UnicodeDecodeError, csv.Error, EOFError):
                    return None  # the import names a damaged file
    return None


# ------------------------------------------------------------------------------------------- checks
def check_bounds(config: dict, root: str = ".") -> None:
    """Every bound of the module docstring; `root`: the working directory (resources/, results/)."""
    _check_data_bounds(config)
    _check_recommender_bounds(config)
    if not any((m or {}).get("family") in ("llm", "latent") for m in (config.get("methods") or {}).values()):
        return
    model = model_config(config, root)
    context, ctx_why = model_context(model)
    dims = _dims(model) if model else None
    llm = config["llm"]
    for key in ("sft_gpus", "decode_gpus", "rl_gpus"):
        _at_most(
            f"llm.{key}",
            llm.get(key),
            MAX_GPUS_PER_JOB,
            f"a job's GPUs sit on one node and no node has more than {MAX_GPUS_PER_JOB}",
        )
    _check_shards(config, root)
    _check_sft("llm.sft", llm.get("sft") or {}, llm.get("sft_grid"), context, ctx_why, dims, llm.get("sft_gpus", 0))
    from latentrec.config import latent_recipe

    for name, raw in (llm.get("latent") or {}).items():
        raw = raw or {}
        where = f"llm.latent.{name}"
        for ds in [None, *(raw.get("per_dataset") or {})]:
            here = where if ds is None else f"{where}.per_dataset.{ds}"
            r = latent_recipe(config, name, ds)
            _at_most(
                f"{here}.n_latents",
                r["n_latents"],
                MAX_LATENT_FORWARDS,
                "each latent is one more backbone forward per sample",
            )
            _at_most(
                f"{here}.refine_steps",
                r["refine_steps"],
                MAX_LATENT_FORWARDS,
                "each refinement is one more backbone forward per latent",
            )
            _at_most(
                f"{here}.n_latents",
                r["n_latents"] * r["refine_steps"],
                MAX_LATENT_FORWARDS,
                f"n_latents x refine_steps ({r['n_latents']} x {r['refine_steps']}) backbone forwards per "
                "sample, each holding its activations for the backward; the papers use 1-8",
            )
            grid = raw["sft_grid"] if "sft_grid" in raw else llm.get("sft_grid")
            _check_sft(f"{here}.sft", r["sft"], grid, context, ctx_why, dims, llm.get("sft_gpus", 0))
        r = latent_recipe(config, name)
        if r.get("rl") is not None:
            _check_rl(f"{where}.rl", r["rl"], r.get("rl_grid") or {}, context, ctx_why, dims, llm.get("rl_gpus", 0))
    for m, c in (config.get("methods") or {}).items():
        if c.get("family") in ("llm", "latent"):
            _check_decode(
                f"methods.{m}.decode", c.get("decode") or {}, context, ctx_why, dims, llm.get("decode_gpus", 0)
            )
    timing = ((config.get("report") or {}).get("flr") or {}).get("timing") or {}
    if isinstance(timing.get("decode"), dict):
        _check_decode("report.flr.timing.decode", timing["decode"], context, ctx_why, dims, llm.get("decode_gpus", 0))


def _check_data_bounds(config: dict) -> None:
    from latentrec.config import processing_config

    for name, d in (config.get("datasets") or {}).items():
        syn = d.get("synthetic") or {}
        _at_most(
            f"datasets.{name}.synthetic.n_users",
            syn.get("n_users"),
            MAX_SYNTHETIC_USERS,
            "the generator simulates users one by one and holds every review in memory",
        )
        _at_most(
            f"datasets.{name}.synthetic.n_items",
            syn.get("n_items"),
            MAX_SYNTHETIC_ITEMS,
            "as many items as the largest Amazon 2018 category (Books, ~2.9M)",
        )
        p = processing_config(config, name)
        own = d.get("processing") or {}
        here = lambda key: f"datasets.{name}.processing.{key}" if key in own else f"processing.{key}"  # noqa: E731
        if d.get("source") == "synthetic":
            _at_most(
                here("k_core"),
                p.get("k_core"),
                MAX_SYNTHETIC_REVIEWS_PER_USER,
                f"the synthetic generator writes at most {MAX_SYNTHETIC_REVIEWS_PER_USER} reviews per user, so "
                "no user would survive the k-core",
            )
        elif d.get("source") == "raw":
            _at_most(
                here("k_core"),
                p.get("k_core"),
                MAX_K_CORE,
                "no Amazon 2018 category keeps enough users with more reviews than that to split (the papers use 5)",
            )
        _at_most(
            here("history_len"),
            p.get("history_len"),
            MAX_HISTORY_LEN,
            "prompts are cut to the SFT max_len tokens and a title is several tokens, so a longer history is "
            "never seen, and SASRec's attention memory grows with its square",
        )
        ratios = p.get("split_ratios")
        if isinstance(ratios, list) and any(isinstance(r, (int, float)) and r <= 0 for r in ratios):
            _fail(
                here("split_ratios"),
                f"each of train, valid and test must be > 0: a split of ratio 0 is empty and "
                f"its stage (training, model selection or scoring) cannot run, got {ratios}",
            )


def _check_recommender_bounds(config: dict) -> None:
    from latentrec.config import RECOMMENDER_FAMILIES, grid_points

    for m, c in (config.get("methods") or {}).items():
        if c.get("family") not in RECOMMENDER_FAMILIES:
            continue
        from latentrec.baselines.registry import FAMILIES

        defaults = FAMILIES[c["family"]].hyperparameters()
        for point, params in grid_points(c).items() if _grid_size(c.get("grid")) <= MAX_JOBS else []:
            params = {**defaults, **params}
            h, layers = params.get("hidden"), params.get("n_layers")
            if not isinstance(h, int) or not isinstance(layers, int):
                continue
            n = 12 * h * h * layers  # attention and feed-forward weights of a transformer/GRU block, roughly
            if n > MAX_RECOMMENDER_PARAMS:
                where = (
                    f"methods.{m}.grid"
                    if c.get("grid") and {"hidden", "n_layers"} & set(c["grid"])
                    else f"methods.{m}.params"
                )
                _fail(
                    f"{where}.hidden",
                    f"hidden {h:,} x n_layers {layers:,} makes about {n:.1e} weights (12 x hidden"
                    f"^2 per layer), more than {MAX_RECOMMENDER_PARAMS:.0e}: its AdamW state "
                    "alone would not fit any machine; the papers use hidden 64, 2 layers"
                    + (f" (grid point {point})" if c.get("grid") else ""),
                )


def _check_shards(config: dict, root: str) -> None:
    shards = config["llm"].get("decode_shards", 1)
    limit = (config.get("evaluation") or {}).get("test_limit")
    for d in config.get("run_datasets") or []:
        rows = test_rows(config, d, root)
        if rows:  # an empty or unreadable split is named by its import
            n = rows if limit is None else min(rows, limit)
            if shards > n:
                _fail(
                    "llm.decode_shards",
                    f"{shards:,} decode shards of {n:,} test rows ({d}"
                    + (", evaluation.test_limit" if limit is not None and limit < rows else "")
                    + f") leave shards without a row; use at most {n:,}",
                )
    _at_most(
        "llm.decode_shards",
        shards,
        MAX_DECODE_SHARDS,
        "each shard is a job that loads the backbone once; more shards spend longer loading than decoding",
    )


def _sft_points(base: dict, grid) -> list[tuple[str, dict]]:
    if not isinstance(grid, dict) or not grid or _grid_size(grid) > MAX_JOBS:
        return [("", base)]
    from latentrec.config import grid_points

    return [(f" (grid point {p})", params) for p, params in grid_points({"params": base, "grid": grid}).items()]


def _check_sft(where, base, grid, context, ctx_why, dims, gpus) -> None:
    from latentrec.llm.sft import SFTConfig

    defaults = SFTConfig()
    for point, params in _sft_points(base, grid):
        cfg = {
            f: params.get(f, getattr(defaults, f)) for f in ("max_len", "micro_batch", "effective_batch", "train_limit")
        }
        if not all(isinstance(v, int) for k, v in cfg.items() if k != "train_limit"):
            continue  # SFTConfig.from_dict names a wrong type
        if cfg["max_len"] > context:
            _fail(f"{where}.max_len", f"must be at most {context:,}, {ctx_why}, got {cfg['max_len']:,}{point}")
        _at_most(
            f"{where}.micro_batch",
            cfg["micro_batch"],
            MAX_BATCH,
            "samples of one forward; the papers use 4-16, and activations grow with it",
        )
        _at_most(
            f"{where}.effective_batch",
            cfg["effective_batch"],
            MAX_EFFECTIVE_BATCH,
            "samples per optimiser step; the papers use 128",
        )
        limit = cfg["train_limit"]
        if isinstance(limit, int) and cfg["effective_batch"] > limit:
            _fail(
                f"{where}.effective_batch",
                f"one optimiser step of {cfg['effective_batch']:,} samples needs more "
                f"than the {limit:,} of train_limit; use at most {limit:,}{point}",
            )
        if dims:
            gb = estimate_gb("sft", dims, rows=cfg["micro_batch"], tokens=cfg["max_len"])
            _check_memory(
                f"{where}.micro_batch", "micro_batch (or max_len)", gb, gpus, estimate_gb("sft", dims, rows=0, tokens=0)
            )


def _check_rl(where, base, grid, context, ctx_why, dims, gpus) -> None:
    from latentrec.llm.grpo import LRGRPOConfig

    defaults = LRGRPOConfig()
    for point, params in _sft_points(base, grid):
        cfg = {
            f: params.get(f, getattr(defaults, f))
            for f in ("group_size", "groups_per_step", "advantage_groups", "max_len")
        }
        if not all(isinstance(v, int) for k, v in cfg.items() if k != "advantage_groups"):
            continue
        if cfg["max_len"] > context:
            _fail(f"{where}.max_len", f"must be at most {context:,}, {ctx_why}, got {cfg['max_len']:,}{point}")
        _at_most(
            f"{where}.group_size",
            cfg["group_size"],
            MAX_RL_GROUP,
            "draws of one sample go through one forward together; the papers use 8",
        )
        _at_most(
            f"{where}.groups_per_step",
            cfg["groups_per_step"],
            MAX_RL_GROUPS_PER_STEP,
            "samples per optimiser step; the papers use 32",
        )
        if dims:
            per_forward = (cfg["advantage_groups"] or cfg["groups_per_step"]) // max(1, gpus)
            gb = estimate_gb("rl", dims, rows=max(1, per_forward) * cfg["group_size"], tokens=cfg["max_len"])
            _check_memory(
                f"{where}.groups_per_step",
                "groups_per_step or group_size (or set advantage_groups: one forward holds that many samples)",
                gb,
                gpus,
                estimate_gb("rl", dims, rows=0, tokens=0),
            )


def _check_decode(where, decode, context, ctx_why, dims, gpus) -> None:
    from latentrec.llm.decoding import DecodeConfig

    d = {**DecodeConfig().record(), **decode}
    beams, ret, batch, new = d["num_beams"], d["num_return"], d["batch_size"], d["max_new_tokens"]
    if not all(isinstance(v, int) for v in (beams, ret, batch)):
        return  # the schema names a wrong type
    _at_most(
        f"{where}.num_beams",
        beams,
        MAX_BEAMS,
        "the papers decode 10 beams, and every beam is one more sequence in each decode forward",
    )
    _at_most(f"{where}.batch_size", batch, MAX_BATCH, "prompts decoded together, each with num_beams sequences")
    if isinstance(new, int) and new > context:
        _fail(f"{where}.max_new_tokens", f"must be at most {context:,}, {ctx_why}, got {new:,}")
    cot = d.get("cot") or {}
    reasoning = cot.get("max_reasoning_tokens") if isinstance(cot, dict) else None
    if isinstance(reasoning, int) and reasoning > context:
        _fail(f"{where}.cot.max_reasoning_tokens", f"must be at most {context:,}, {ctx_why}, got {reasoning:,}")
    if isinstance(cot, dict) and isinstance(cot.get("batch_size"), int):
        _at_most(f"{where}.cot.batch_size", cot["batch_size"], MAX_BATCH, "prompts reasoned together")
    if dims:
        tokens = 256 + (new if isinstance(new, int) else 64) + (reasoning if isinstance(reasoning, int) else 0)
        gb = estimate_gb("decode", dims, rows=batch, tokens=min(tokens, context), beams=beams)
        _check_memory(
            f"{where}.batch_size", "batch_size (or num_beams)", gb, gpus, estimate_gb("decode", dims, rows=0, tokens=0)
        )


# ------------------------------------------------------------------------------------------- GPUs
def check_gpu_resource(config: dict, global_resources) -> None:
    """GPUs per job at most the run's `gpu` resource (--resources gpu=N): Snakemake cuts a job's request
    down to it silently, and the job would then fail when it leases the GPUs it was configured for."""
    res = (global_resources or {}).get("gpu")
    limit = getattr(res, "value", res)
    if not isinstance(limit, int):
        return  # no gpu resource given: nothing trims the requests
    llm = config.get("llm") or {}
    for key in ("sft_gpus", "rl_gpus", "decode_gpus"):
        n = llm.get(key) or 0
        if n > limit:
            _fail(
                f"llm.{key}",
                f"{n} GPUs per job, but this run has gpu={limit} (--resources gpu={limit}); "
                f"Snakemake would cut the job to {limit} silently and it would fail when it leases "
                f"its GPUs; use at most {limit}, or raise --resources gpu",
            )

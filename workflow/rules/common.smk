# Config access, wildcard constraints, input functions and target lists shared by every rule file.
import json
import os
import re
import shlex

from latentrec import rule_resources
from latentrec.bounds import check_gpu_resource
from latentrec.failures import job_shell_prefix
from latentrec.report.escape import json_for_html
from latentrec.data.download import amazon2018_urls
from latentrec.config import (
    dataset_config,
    grid_points,
    latent_architecture,
    latent_recipe,
    latent_recipes_used,
    latent_rl_points,
    llm_methods,
    method_config,
    processing_config,
    recommender_methods,
    sft_grid_points,
    POINT_PATTERN,
)
from latentrec.config_checks import validate_config

# Meaning, before any job (it builds the SFT/RL configs as the jobs will, so it imports torch: ~3 s).
# A cluster job re-reads this file with the config the main process already checked: skipped there.
if workflow.is_main_process:
    validate_config(config)
    # --resources gpu=N trims a job's GPU request silently: refuse a config asking for more.
    check_gpu_resource(config, workflow.global_resources)


if workflow.is_main_process:
    rule_resources.check_slurm_account(workflow.resource_settings.default_resources)

# Rules run this checkout's package whatever environment they are in (venv, conda, cluster node), and a job
# killed for memory says so (failures.job_shell_prefix). Snakemake formats the prefix: braces are doubled.
SRC = shlex.quote(os.path.join(workflow.basedir, "src"))
shell.prefix(job_shell_prefix(SRC).replace("{", "{{").replace("}", "}}"))
ENV = "../../envs/latentrec.yaml"

DATASETS = list(config["run_datasets"])
SEEDS = [int(s) for s in config["seeds"]]
RUN_METHODS = list(config["run_methods"])
LLM = config["llm"]
TEST_LIMIT = config.get("evaluation", {}).get("test_limit")
TEST_LIMIT_ARG = "" if TEST_LIMIT is None else f"--test-limit {int(TEST_LIMIT)}"


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "^$"


# Only the configured names (validated against NAME_PATTERN) match; grid points are safe folder names.
wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    method=_alternatives(config["methods"]),
    seed=r"\d+",
    recipe=_alternatives(config["llm"].get("latent", {})),
    model=_alternatives(config["llm"]["models"]),
    point=POINT_PATTERN.strip("^$"),


def as_arg(obj):
    """A config slice as one shell-safe JSON argument (Snakemake re-runs a job when it changes).
    `snakemake --report` embeds params raw inside a <script>: < > & are written as JSON escapes
    (read back identically), so no config string can close the script or open markup."""
    return shlex.quote(json_for_html(obj))


def datasets_with_source(*sources):
    return [d for d in config["datasets"] if config["datasets"][d]["source"] in sources]


def raw_files(dataset):
    """Reviews and meta file of a raw or synthetic dataset, where the data rules put them."""
    d = dataset_config(config, dataset)
    if d["source"] == "synthetic":
        return {
            "reviews": f"resources/synthetic/{dataset}_5.json.gz",
            "meta": f"resources/synthetic/meta_{dataset}.json.gz",
        }
    cat = d.get("category", dataset)
    suffix = "_5" if config["download"].get("review_file", "5core") == "5core" else ""
    return {
        "reviews": f"resources/amazon2018/{cat}{suffix}.json.gz",
        "meta": f"resources/amazon2018/meta_{cat}.json.gz",
    }


def processed(dataset):
    return expand(
        "results/{dataset}/data/{table}.parquet",
        dataset=dataset,
        table=["items", "train", "valid", "test"],
    )


def grid_method_config(method, point):
    """The method config with the grid point's params and no grid (one job = one point)."""
    cfg = {k: v for k, v in method_config(config, method).items() if k != "grid"}
    cfg["params"] = grid_points(method_config(config, method))[point]
    return cfg


def item_embeddings_input(w):
    """AlphaRec reads the backbone's title embeddings of the dataset; other families read nothing."""
    if method_config(config, w.method)["family"] != "alpharec":
        return []
    return f"results/{w.dataset}/_cache/title_embeddings_{LLM['backbone']}.npy"


def item_embeddings_arg(w):
    path = item_embeddings_input(w)
    return f"--item-embeddings {shlex.quote(path)}" if path else ""


def report_paper_names():
    """{method: its row in paper_results.yaml}: methods' `paper_name`, then report.paper_names."""
    names = {
        m: c["paper_name"] for m, c in config["methods"].items() if "paper_name" in c
    }
    return {**names, **config["report"].get("paper_names", {})}


def report_display_names():
    """{method: row label in the tables} for methods with a `display_name`."""
    return {
        m: c["display_name"]
        for m, c in config["methods"].items()
        if "display_name" in c
    }


def run_dir(dataset, method, seed):
    return f"results/{dataset}/{method}/seed{seed}"


def runs_on(method, dataset):
    only = method_config(config, method).get("datasets")
    return only is None or dataset in only


def method_seeds(method):
    """The run's seeds, or the subset a method lists under `seeds` (costly methods on a CPU budget)."""
    only = method_config(config, method).get("seeds")
    return SEEDS if only is None else [s for s in SEEDS if s in {int(x) for x in only}]


def all_metrics():
    return [
        f"{run_dir(d, m, s)}/metrics.json"
        for d in DATASETS
        for m in RUN_METHODS
        for s in method_seeds(m)
        if runs_on(m, d)
    ]


def _latentr3_report_methods():
    r = config["report"].get("latentr3", {})
    names = (
        set(r.get("pairs", {}))
        | set(r.get("pairs", {}).values())
        | set(r.get("ablation", {}))
    )
    names |= (
        set(r.get("lengths", {}))
        | set(r.get("popularity_methods", []))
        | set(r.get("cost_methods", []))
    )
    grpo = (
        r.get("grpo_compare") or {}
    )  # Figure 4: {original-GRPO method: LR-GRPO method}
    return names | set(grpo) | set(grpo.values())


def latentr3_report_metrics():
    wanted = _latentr3_report_methods()
    return [p for p in all_metrics() if p.split("/")[2] in wanted]


def latentr3_rl_logs():
    wanted = _latentr3_report_methods()
    logs = []
    for d in DATASETS:
        for m in RUN_METHODS:
            c = method_config(config, m)
            if m in wanted and c["family"] == "latent" and runs_on(m, d):
                for s in method_seeds(m):
                    for point in latent_rl_points(config, c["recipe"]):
                        logs.append(
                            f"results/{d}/latent/{c['recipe']}/seed{s}/rl/{point}/rl_log.json"
                        )
    return sorted(set(logs))


# ---- FLR analyses: the runs, factor dumps and decode timings that report_flr reads
FLR_REPORT = config["report"].get("flr") or {}


def _flr_report_methods():
    r = FLR_REPORT
    names = set(r.get("table2", {}).get("rows", {})) | set(r.get("table4", []))
    names |= set(r.get("table3", {}).get("rows", {})) | set(r.get("k_methods", []))
    return names | set(r.get("popularity_methods", []))


def flr_report_metrics():
    wanted = _flr_report_methods()
    return [p for p in all_metrics() if p.split("/")[2] in wanted]


def _first_seed_runs(methods):
    """(dataset, method, seed) of the listed methods that run, on the first seed only."""
    return [
        (d, m, method_seeds(m)[0])
        for d in DATASETS
        for m in RUN_METHODS
        if m in methods and runs_on(m, d)
    ]


def _has_flr_head(method, dataset):
    """Its model has an FLR head: its recipe's, or that of the warm-up it shares (`warmup_from`)."""
    c = method_config(config, method)
    return (
        c["family"] == "latent"
        and latent_architecture(config, c["recipe"], dataset)["head"] == "flr"
    )


def flr_factor_files():
    methods = FLR_REPORT.get("factors", {}).get("methods", {})
    return [
        f"{run_dir(d, m, s)}/flr_factors.npz"
        for d, m, s in _first_seed_runs(methods)
        if _has_flr_head(m, d)
    ]


def flr_timing_files():
    """Figure 9 on every dataset where one of its methods is in `run_methods`; there it times every
    listed method that is defined, run or not: a timing needs only the method's model, not its full
    decode (CoT on a CPU budget). A baselines-only config times nothing."""
    methods = FLR_REPORT.get("timing", {}).get("methods", [])
    return [
        f"{run_dir(d, m, method_seeds(m)[0])}/inference_time.json"
        for d in DATASETS
        if any(r in methods and runs_on(r, d) for r in RUN_METHODS)
        for m in methods
        if m in config["methods"] and runs_on(m, d)
    ]


def flr_timing_decode(method):
    """The method's decode config with the timing protocol laid over it (batch, beams; CoT beam 1)."""
    t = FLR_REPORT.get("timing", {})
    per_method = (t.get("per_method") or {}).get(method, {})
    return {
        **method_config(config, method).get("decode", {}),
        **(t.get("decode") or {}),
        **per_method,
    }


def flr_n_factors():
    """K of every Figure 8 method per dataset, read off its recipe (FLRHead's default K is 4)."""
    out = {}
    for d, m, _ in _first_seed_runs(FLR_REPORT.get("k_methods", [])):
        if _has_flr_head(m, d):
            r = latent_recipe(config, method_config(config, m)["recipe"], d)
            out.setdefault(d, {})[m] = int(
                (r.get("head_options") or {}).get("n_factors", 4)
            )
    return out


def all_targets():
    targets = _core_targets()
    if config["report"].get("latentr3") and latentr3_report_metrics():
        targets.append("results/tables/latentr3_gains.md")
    if FLR_REPORT and (flr_report_metrics() or flr_timing_files()):
        targets.append("results/tables/flr_table2.md")
    return targets


def _core_targets():
    return [
        "results/tables/table1.md",
        "results/tables/table1.csv",
        "results/tables/table1.tex",
        "results/tables/dataset_stats.md",
        "results/tables/significance.md",
        "results/tables/llm_vs_strongest.md",
    ]


def download_url(w):
    kind = "meta" if w.file.startswith("meta_") else "reviews"
    stem = w.file.removesuffix(".json.gz")
    category = stem.removeprefix("meta_").removesuffix("_5")
    review_file = "5core" if stem.endswith("_5") else "full"
    urls = amazon2018_urls(category, review_file, config["download"]["base_url"])
    return urls[kind]


# ---- SFT learning-rate grids (llm.sft_grid; a recipe's sft_grid for its warm-up) -------------------
# A grid fans one SFT into a job per point (.../grid/{point}/), and a selection job writes selected.json
# naming the point with the lowest validation loss. Consumers take that file as --model (the CLIs resolve
# it, latentrec.llm.backbone.resolve_model), as they take select_latent_rl's. No checkpoint is needed: the
# DAG never depends on which point wins, and a re-trained point re-runs the selection and all it feeds.
SFT_POINTS = sft_grid_points(config)  # {} without llm.sft_grid: one sft_backbone job
# One sft_backbone job: per dataset and seed, or per grid point too.
SFT_JOB = "{dataset}/seed{seed}/{point}" if SFT_POINTS else "{dataset}/seed{seed}"
SFT_OUT = (
    "results/{dataset}/sft/seed{seed}/grid/{point}"
    if SFT_POINTS
    else "results/{dataset}/sft/seed{seed}"
)


def sft_model(dataset, seed):
    """The dataset's BIGRec/D3 SFT model: its folder, or with llm.sft_grid the selection file."""
    if SFT_POINTS:
        return f"results/{dataset}/sft/seed{seed}/selected.json"
    return f"results/{dataset}/sft/seed{seed}/model"


def latent_warmup_grid(recipe):
    """Whether the recipe's warm-up fans out over an SFT grid."""
    return bool(sft_grid_points(config, recipe))


def latent_warmup_point_config(recipe, dataset, point):
    """The warm-up cfg of one grid point: the recipe with the point's sft, without the grid and the RL
    keys (the warm-up reads neither: changing RL does not re-train it)."""
    r = latent_recipe(config, recipe, dataset)
    for key in ("sft_grid", "rl", "rl_grid"):
        r.pop(key, None)
    r["sft"] = sft_grid_points(config, recipe, dataset)[point]
    return r


def latent_warmup_model(dataset, recipe, seed):
    """Recipes that differ only after the warm-up share one (`warmup_from`); a gridded warm-up's model
    is its selection file."""
    name = latent_recipe(config, recipe).get("warmup_from") or recipe
    if latent_warmup_grid(name):
        return f"results/{dataset}/latent/{name}/seed{seed}/warmup/selected.json"
    return f"results/{dataset}/latent/{name}/seed{seed}/warmup/model"


def latent_init_model(dataset, recipe, seed):
    """Where the warm-up starts: the base backbone (the paper), or the dataset's SFT model (`init: sft`,
    a cheaper warm-up for CPU budgets)."""
    r = latent_recipe(config, recipe)
    if r.get("init", "base") == "sft":
        # `init_seed` pins one SFT model for every seed: seeds then vary the warm-up and RL only.
        return sft_model(dataset, r.get("init_seed", seed))
    return f"resources/models/{LLM['backbone']}"


def latent_model(dataset, recipe, seed, stage="final"):
    """A latent recipe's model: the RL choice on validation, or the warm-up (no RL, or stage 'warmup')."""
    if stage == "final" and latent_rl_points(config, recipe):
        return f"results/{dataset}/latent/{recipe}/seed{seed}/selected.json"
    return latent_warmup_model(dataset, recipe, seed)


def llm_model_input(w):
    """Base decodes the untuned backbone; tuned methods decode the SFT model of their seed;
    latent methods the final model of their recipe."""
    m = method_config(config, w.method)
    if m["family"] == "latent":
        return latent_model(w.dataset, m["recipe"], w.seed, m.get("stage", "final"))
    if m.get("tuned", True):
        return sft_model(w.dataset, w.seed)
    return f"resources/models/{LLM['backbone']}"


# ---- what each job asks for: the table in latentrec/rule_resources.py, by rule name ------------------
# A rule asks `mem_mb=job_mem_mb(name)` and `runtime=job_runtime(name)` (minutes), a GPU rule also
# `nodes=gpu_nodes(name)`, `gpu=job_gpus(name)` and `launcher(name)`: a SLURM profile holds only cluster keys.
# The lookups run at parse time, so a rule without a table entry stops the DAG.


def job_mem_mb(rule_name):
    rule_resources.resources_of(rule_name)
    return lambda wildcards, input, attempt: rule_resources.mem_mb(
        rule_name, config, wildcards, input, attempt
    )


def job_runtime(rule_name):
    rule_resources.resources_of(rule_name)
    return lambda wildcards, input, attempt: rule_resources.runtime_minutes(
        rule_name, config, wildcards, input, attempt
    )


def job_gpus(rule_name):
    return rule_resources.job_gpus(rule_name, config)


def gpu_nodes(rule_name):
    return rule_resources.gpu_nodes(rule_name, config)


def launcher(rule_name):
    return rule_resources.launcher(rule_name, config)


# The folders the CLIs take: a job's processed dataset (named input `data`) and the folder it writes.
def data_folder(wildcards, input):
    return os.path.dirname(input.data[0])


def out_folder(wildcards, output):
    return os.path.dirname(output[0])


# ---- training: the tracker each training job logs to, and its curve figure in the report ----------------
TRACKING = LLM.get("tracking", "tensorboard")


def training_curves(folder, model, stage, point="–"):
    """The training-curve figure a training job writes beside its log, in the report's "Training curves"
    category by dataset, one row per trained model (`folder` and the labels may hold wildcards).
    """
    return report(
        f"{folder}/training_curves.png",
        caption="../report/training_curves.rst",
        category="Training curves",
        subcategory="{dataset}",
        labels={"model": model, "stage": stage, "seed": "{seed}", "grid point": point},
    )

"""A bad config stops before any job starts, with a message naming the key path and what it allows.

Most cases call the checks the Snakefile runs (`validate_schema`, then `validate_config`) on config.yaml with
an overlay merged the way `--configfile` merges it; a handful run `snakemake -n` end to end.
"""

import copy
import re

import pytest
import yaml
from snakemake.utils import update_config

from latentrec.config import NAME_PATTERN
from latentrec.config_checks import check_config_files, validate_config, validate_schema
from latentrec.errors import InputError
from tests.conftest import CDS_SPLIT
from tests.test_workflow import ROOT, job_counts, snakemake

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def complete_split(folder):
    """A folder that passes the DAG-build check of a processed split (the files' contents are the import's job)."""
    folder.mkdir()
    for name in ("info.txt", "train.csv", "valid.csv", "test.csv"):
        (folder / name).write_text("x\n")
    return folder


def merged(overlay: dict) -> dict:
    """config.yaml with `overlay` laid over it as Snakemake lays a --configfile (dicts merge, lists replace)."""
    cfg = copy.deepcopy(DEFAULT)
    update_config(cfg, copy.deepcopy(overlay))
    return cfg


def check(cfg: dict) -> None:
    validate_schema(cfg, SCHEMA)
    validate_config(cfg)


SFT = "llm.sft"
# (id, overlay, text the message must contain: the key path first, then the allowed values)
CASES = [
    ("sft_unknown_key", {"llm": {"sft": {"lrr": 1.0e-3}}}, [f"config: {SFT}: unknown SFT option(s) ['lrr']", "known:"]),
    ("sft_micro_batch_0", {"llm": {"sft": {"micro_batch": 0}}}, [f"{SFT}.micro_batch: must be an integer >= 1, got 0"]),
    ("sft_negative_lr", {"llm": {"sft": {"lr": -1.0e-4}}}, [f"{SFT}.lr: must be a number > 0, got -0.0001"]),
    ("sft_lr_as_text", {"llm": {"sft": {"lr": "3e-4"}}}, [f"{SFT}.lr: must be a number > 0, got '3e-4'", "3.0e-4"]),
    (
        "sft_max_steps_text",
        {"llm": {"sft": {"max_steps": "four"}}},
        [f"{SFT}.max_steps: must be an integer >= 1 or null, got 'four'"],
    ),
    ("sft_max_len_0", {"llm": {"sft": {"max_len": 0}}}, [f"{SFT}.max_len: must be an integer >= 1, got 0"]),
    (
        "sft_effective_batch_0",
        {"llm": {"sft": {"effective_batch": 0}}},
        [f"{SFT}.effective_batch: must be an integer >= 1, got 0"],
    ),
    (
        "sft_effective_below_micro",
        {"llm": {"sft": {"effective_batch": 2, "micro_batch": 4}}},
        [f"{SFT}.effective_batch: must be a multiple of micro_batch (4), got 2"],
    ),
    (
        "sft_warmup_negative",
        {"llm": {"sft": {"warmup_steps": -5}}},
        [f"{SFT}.warmup_steps: must be an integer >= 0, got -5"],
    ),
    (
        "sft_float_for_int",
        {"llm": {"sft": {"micro_batch": 4.5}}},
        [f"{SFT}.micro_batch: must be an integer >= 1, got 4.5"],
    ),
    (
        "sft_bad_choice",
        {"llm": {"sft": {"mixed_precision": "fp8"}}},
        [f"{SFT}.mixed_precision: must be one of ['auto', 'bf16', 'fp16', 'no'], got 'fp8'"],
    ),
    (
        "recipe_sft",
        {"llm": {"latent": {"FLR": {"sft": {"micro_batch": 0}}}}},
        ["llm.latent.FLR.sft.micro_batch: must be an integer >= 1, got 0"],
    ),
    (
        "recipe_rl_group_size",
        {"llm": {"latent": {"LatentR3": {"rl": {"group_size": 1}}}}},
        ["llm.latent.LatentR3.rl.group_size: must be an integer >= 2 (draw 0 is the noise-free baseline), got 1"],
    ),
    (
        "recipe_rl_forward_samples_not_a_divisor",
        {"llm": {"rl_gpus": 1, "latent": {"LatentR3": {"rl": {"groups_per_step": 8, "forward_samples": 3}}}}},
        [
            "llm.latent.LatentR3.rl.forward_samples: must divide the samples sharing a baseline on each of the "
            "llm.rl_gpus = 1 GPUs ((advantage_groups or groups_per_step) / GPUs = 8), got 3"
        ],
    ),
    (
        "recipe_rl_forward_samples_with_decoded_rollouts",
        {"llm": {"latent": {"LatentR3": {"rl": {"rollout": "decode", "advantage": "group", "forward_samples": 1}}}}},
        ["llm.latent.LatentR3.rl.forward_samples: applies to rollout 'noise'"],
    ),
    (
        "recipe_rl_unknown",
        {"llm": {"latent": {"LatentR3": {"rl": {"noise": 1.0}}}}},
        ["llm.latent.LatentR3.rl: unknown RL option(s) ['noise']"],
    ),
    (
        "recipe_rl_grid_value",
        {"llm": {"latent": {"LatentR3": {"rl_grid": {"lr": [1.0e-4, -1.0]}}}}},
        ["llm.latent.LatentR3.rl_grid.lr: must be a number > 0, got -1.0 (grid point lr-1.0)"],
    ),
    (
        "sft_grid_value",
        {"llm": {"sft_grid": {"lr": [3.0e-4, -1.0]}}},
        ["llm.sft_grid.lr: must be a number > 0, got -1.0 (grid point lr-1.0)"],
    ),
    (
        "sft_grid_unknown",
        {"llm": {"sft_grid": {"lrr": [1.0e-3]}}},
        ["config: llm.sft_grid: unknown SFT option(s) ['lrr']", "known:"],
    ),
    ("sft_grid_empty", {"llm": {"sft_grid": {"lr": []}}}, ["config: llm.sft_grid.lr: [] should be non-empty"]),
    (
        "sft_grid_repeat",
        {"llm": {"sft_grid": {"lr": [3.0e-4, 3.0e-4]}}},
        ["config: llm.sft_grid.lr: [0.0003] listed more than once"],
    ),
    (
        "sft_grid_seed",
        {"llm": {"sft_grid": {"seed": [0, 1]}}},
        ["llm.sft_grid.seed: the run's `seeds` set the SFT seed"],
    ),
    (
        "sft_grid_breaks_sft",
        {"llm": {"sft_grid": {"micro_batch": [3]}}},
        ["llm.sft.effective_batch: must be a multiple of micro_batch (3), got 8 (grid point micro_batch3)"],
    ),
    (
        "recipe_sft_grid_value",
        {"llm": {"latent": {"FLR": {"sft_grid": {"micro_batch": [0]}}}}},
        ["llm.latent.FLR.sft_grid.micro_batch: must be an integer >= 1, got 0 (grid point micro_batch0)"],
    ),
    (
        "recipe_sft_grid_warmup_from",
        {"llm": {"latent": {"LatentR3": {"warmup_from": "FLR", "sft_grid": {"lr": [1.0e-4]}}}}},
        ["llm.latent.LatentR3.sft_grid: the recipe reuses the warm-up of 'FLR'"],
    ),
    (
        "recipe_sft_grid_per_dataset",
        {
            "llm": {
                "sft_grid": {"lr": [1.0e-3, 1.0e-4]},
                "latent": {"FLR": {"per_dataset": {"Synthetic_Music": {"sft": {"lr": 1.0e-4}}}}},
            }
        },
        ["llm.latent.FLR.per_dataset.Synthetic_Music.sft: ['lr'] are searched by the warm-up's grid (llm.sft_grid)"],
    ),
    (
        "recipe_rl_grid_without_rl",
        {"llm": {"latent": {"FLR": {"rl_grid": {"lr": [1.0e-4]}}}}},
        ["llm.latent.FLR.rl_grid: a grid over RL values needs an `rl` block"],
    ),
    (
        "recipe_unknown_head",
        {"llm": {"latent": {"FLR": {"head": "flrr"}}}},
        ["llm.latent.FLR.head: unknown latent head 'flrr'; known: ['flr', 'last_hidden', 'latentratt']"],
    ),
    (
        "recipe_head_option",
        {"llm": {"latent": {"FLR": {"head_options": {"n_factor": 3}}}}},
        ["llm.latent.FLR.head_options: head 'flr' has no option(s) ['n_factor']", "n_factors"],
    ),
    (
        "recipe_warmup_from",
        {"llm": {"latent": {"FLR": {"warmup_from": "LatentR4"}}}},
        ["llm.latent.FLR.warmup_from: no recipe 'LatentR4'"],
    ),
    (
        "sasrec_hidden_0",
        {"methods": {"SASRec": {"params": {"hidden": 0}}}},
        ["methods.SASRec.params.hidden: must be an integer >= 1, got 0"],
    ),
    (
        "sasrec_unknown_param",
        {"methods": {"SASRec": {"params": {"hiden": 32}}}},
        ["methods.SASRec.params: unknown hyperparameter(s) ['hiden'] of family 'sasrec'", "'hidden'"],
    ),
    (
        "sasrec_heads",
        {"methods": {"SASRec": {"params": {"n_heads": 3}}}},
        ["methods.SASRec.params.n_heads: must divide hidden (64), got 3"],
    ),
    (
        "sasrec_grid",
        {"methods": {"SASRec": {"grid": {"max_epochs": [0, 5]}}}},
        ["methods.SASRec.grid.max_epochs: must be an integer >= 1, got 0 (grid point max_epochs0)"],
    ),
    (
        "sasrec_loss",
        {"methods": {"SASRec": {"params": {"loss": "softmax"}}}},
        ["methods.SASRec.params.loss: must be one of ['bce', 'ce'], got 'softmax'"],
    ),
    (
        "mostpop_params",
        {"methods": {"MostPop": {"params": {"hidden": 8}}}},
        ["methods.MostPop.params: unknown hyperparameter(s) ['hidden'] of family 'mostpop'; known: none"],
    ),
    (
        "typo_top_level",
        {"evalution": {"test_limit": 8}},
        ["config: (top level): unknown key(s) ['evalution']", "'evaluation'"],
    ),
    (
        "typo_method_level",
        {"methods": {"SASRec": {"parms": {"hidden": 8}}}},
        ["config: methods.SASRec: unknown key(s) ['parms']", "'params'"],
    ),
    (
        "typo_llm_level",
        {"llm": {"decode_shard": 2}},
        ["config: llm: unknown key(s) ['decode_shard']", "'decode_shards'"],
    ),
    (
        "key_not_read_by_family",
        {"methods": {"MostPop": {"tuned": False}}},
        ["methods.MostPop.tuned: family 'mostpop' does not read it"],
    ),
    (
        "unknown_family",
        {"methods": {"SASRec": {"family": "sasrek"}}},
        [
            "methods.SASRec.family: unknown family 'sasrek'; known: ['alpharec', 'caser', 'gru4rec', 'latent', 'llm', "
            "'mostpop', 'sasrec']"
        ],
    ),
    (
        "unknown_recipe",
        {"methods": {"BIGRec+FLR": {"recipe": "FLRR"}}},
        ["methods.BIGRec+FLR.recipe: no recipe 'FLRR' under llm.latent (known: ['FLR', 'LatentR3'])"],
    ),
    (
        "unknown_backbone",
        {"llm": {"backbone": "Qwen2.5-1.5B"}},
        ["llm.backbone: 'Qwen2.5-1.5B' is not a key of llm.models (known: ['SmolLM2-135M-Instruct'])"],
    ),
    ("negative_seed", {"seeds": [-1]}, ["config: seeds[0]: -1 is less than the minimum of 0"]),
    ("duplicate_seeds", {"seeds": [0, 1, 0]}, ["config: seeds: [0] listed more than once"]),
    (
        "duplicate_run_methods",
        {"run_methods": ["MostPop", "SASRec", "MostPop"]},
        ["config: run_methods: ['MostPop'] listed more than once"],
    ),
    (
        "method_datasets",
        {"methods": {"SASRec": {"datasets": ["Synthetic_Musik"]}}},
        ["methods.SASRec.datasets: 'Synthetic_Musik' is not a dataset"],
    ),
    (
        "min_items_unreachable",
        {"datasets": {"Synthetic_Music": {"processing": {"min_items": 100000}}}},
        [
            "datasets.Synthetic_Music.processing.min_items: 100000 items can never survive the k-core",
            "the synthetic catalog has n_items",
        ],
    ),
    (
        "min_items_absurd_raw",
        {"datasets": {"CDs_and_Vinyl": {"source": "raw", "domain": "musics"}}, "processing": {"min_items": 10**8}},
        ["processing.min_items: 100000000 is more items than any Amazon 2018 category has"],
    ),
    (
        "min_start_year_0",
        {"processing": {"min_start_year": 0}},
        ["config: processing.min_start_year: 0 is less than the minimum of 1"],
    ),
    (
        "min_start_year_after_window",
        {"processing": {"min_start_year": 2018}},
        ["processing.min_start_year: 2018 is after window_start '2017-10'"],
    ),
    ("window_month", {"processing": {"window_start": "2017-13"}}, ["processing.window_start: month 13"]),
    (
        "decode_num_return_over_beams",
        {"methods": {"BIGRec": {"decode": {"num_beams": 4, "num_return": 5}}}},
        [
            "config: methods.BIGRec.decode.num_return: must be at most num_beams (4): beam search returns "
            "at most one title per beam, got 5"
        ],
    ),
    (
        "decode_cot_on_latent",
        {"methods": {"BIGRec+FLR": {"decode": {"cot": {"max_reasoning_tokens": 4}}}}},
        ["config: methods.BIGRec+FLR.decode.cot: text reasoning (CoT) is for a plain backbone (family llm)"],
    ),
    (
        "decode_timing_beams",
        {"report": {"flr": {"timing": {"methods": ["BIGRec"], "decode": {"num_beams": 2}}}}},
        [
            "config: report.flr.timing.num_return: must be at most num_beams (2): beam search returns at "
            "most one title per beam, got 10 (the timing of BIGRec"
        ],
    ),
    (
        "decode_shards_over_rows",
        {"llm": {"decode_shards": 9}, "evaluation": {"test_limit": 8}},
        ["llm.decode_shards: 9 decode shards of 8 test rows (evaluation.test_limit)", "use at most 8"],
    ),
    (
        "synthetic_block_incomplete",
        {"datasets": {"Tiny": {"source": "synthetic", "domain": "musics", "synthetic": {"n_users": 100}}}},
        ["config: datasets.Tiny.synthetic: 'n_items' is a required property"],
    ),
    (
        "raw_category",
        {"datasets": {"Music2": {"source": "raw", "domain": "musics"}}},
        ["datasets.Music2: a raw dataset downloads its `category` (default: its name)"],
    ),
    (
        "dataset_name",
        {"datasets": {"Syn$(touch x)": {"source": "synthetic", "domain": "musics"}}},
        [f"config: datasets: name 'Syn$(touch x)' is not allowed: names must match {NAME_PATTERN}"],
    ),
    (
        "method_name_space",
        {"methods": {"My Pop": {"family": "mostpop"}}},
        [f"config: methods: name 'My Pop' is not allowed: names must match {NAME_PATTERN}"],
    ),
    (
        "run_dataset_escape",
        {"run_datasets": ["../../escape"]},
        [f"config: run_datasets[0]: name '../../escape' is not allowed: names must match {NAME_PATTERN}"],
    ),
    (
        "recipe_name",
        {"llm": {"latent": {"a/b": {"rl": None}}}},
        [f"config: llm.latent: name 'a/b' is not allowed: names must match {NAME_PATTERN}"],
    ),
    # Grid points become folder names, in every kind of grid.
    (
        "method_grid_point",
        {"methods": {"SASRec": {"grid": {"loss": ["b ce"]}}}},
        [
            "config: methods.SASRec.grid: the grid point 'lossb ce' would not be a safe folder name: grid "
            "values must be "
            "numbers, booleans or simple words"
        ],
    ),
    (
        "rl_grid_point",
        {"llm": {"latent": {"LatentR3": {"rl_grid": {"prompt_style": ["a b"]}}}}},
        ["config: llm.latent.LatentR3.rl_grid: the grid point 'prompt_stylea b' would not be a safe folder name"],
    ),
    (
        "sft_grid_point",
        {"llm": {"sft_grid": {"prompt_style": ["a b"]}}},
        ["config: llm.sft_grid: the grid point 'prompt_stylea b' would not be a safe folder name"],
    ),
    (
        "recipe_sft_grid_point",
        {"llm": {"latent": {"FLR": {"sft_grid": {"prompt_style": ["a/b"]}}}}},
        ["config: llm.latent.FLR.sft_grid: the grid point 'prompt_stylea/b' would not be a safe folder name"],
    ),
]


@pytest.mark.parametrize("overlay, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_refused_with_its_key_path(overlay, expected):
    with pytest.raises(InputError) as err:
        check(merged(overlay))
    msg = str(err.value)
    for text in expected:
        assert text in msg, f"{text!r} not in:\n{msg}"
    assert "config/README.md" in msg


@pytest.mark.parametrize("overlay", [None, "paper.yaml", "cds_cpu.yaml", "cds_baselines.yaml", "demo_full.yaml"])
def test_shipped_configs_are_valid(overlay, tmp_path):
    cfg = merged(yaml.safe_load((ROOT / "config" / overlay).read_text()) if overlay else {})
    for d in cfg["datasets"].values():  # the shipped split folder (resources/splits/) is the user's to fill
        if d["source"] == "processed":
            d["folder"] = str(CDS_SPLIT if CDS_SPLIT.exists() else complete_split(tmp_path / "split"))
    check(cfg)
    check_config_files([ROOT / "config" / "config.yaml", *([ROOT / "config" / overlay] if overlay else [])])


def test_the_cds_column_overlay_is_valid_over_paper_yaml():
    """config/cds_llm_column.yaml goes over paper.yaml: one seed, the CDs dataset, the five LLM rows, no
    FLR timing (its warm-ups are not part of the column)."""
    cfg = merged(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    update_config(cfg, yaml.safe_load((ROOT / "config" / "cds_llm_column.yaml").read_text()))
    check(cfg)
    assert cfg["seeds"] == [0] and cfg["run_datasets"] == ["CDs_and_Vinyl"]
    assert cfg["run_methods"] == ["Base", "BIGRec", "D3", "BIGRec+LatentR3", "D3+LatentR3"]
    assert cfg["report"]["flr"]["timing"]["methods"] == [] and cfg["report"]["flr"]["timing"].get("rows")
    check_config_files([ROOT / "config" / "paper.yaml", ROOT / "config" / "cds_llm_column.yaml"])


def test_names_with_punctuation_are_valid():
    cfg = merged(
        {
            "datasets": {"Syn.Music+2": copy.deepcopy(DEFAULT["datasets"]["Synthetic_Music"])},
            "methods": {"My-Pop_v1.2+x": {"family": "mostpop"}},
            "run_datasets": ["Syn.Music+2"],
            "run_methods": ["My-Pop_v1.2+x", "BIGRec+LatentR3"],
        }
    )
    check(cfg)


def test_duplicate_keys_name_file_line_and_path(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("methods:\n  BIGRec:\n    family: llm\n  D3:\n    family: llm\n  BIGRec:\n    family: llm\n")
    with pytest.raises(
        InputError,
        match=re.escape(f"{f}:6: config: methods.BIGRec: the key 'BIGRec' is written twice (first at line 2)"),
    ):
        check_config_files([f])
    # a merge key followed by an override is not a duplicate (paper.yaml's `rl: {<<: *lr_grpo, advantage: group}`)
    f.write_text("a: &x {lr: 1, b: 2}\nc: {<<: *x, lr: 3}\n")
    check_config_files([f])


def test_backoff_stops_at_min_start_year_with_a_clear_error(tmp_path):
    from datetime import datetime, timezone

    from latentrec.data.build import build_from_raw
    from tests.conftest import write_jsonl_gz

    t = int(datetime(2018, 1, 1, tzinfo=timezone.utc).timestamp())
    recs = [
        {"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5.0, "unixReviewTime": t + u * 60 + i}
        for i in range(6)
        for u in range(6)
    ]
    r = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    m = write_jsonl_gz(tmp_path / "m.json.gz", [{"asin": f"I{i}", "title": f"Item number {i}"} for i in range(6)])
    with pytest.raises(
        InputError,
        match=r"processing\.min_items: 6 items survive .* starting at 1995-10 .*"
        r"min_start_year 1996",
    ):
        build_from_raw(r, m, {"min_items": 7})
    # a min_start_year next to year 1 and a huge step: a clear error, not `year 0 is out of range`
    with pytest.raises(InputError, match=r"processing\.min_items: 6 items survive"):
        build_from_raw(r, m, {"min_items": 7, "min_start_year": 1, "backoff_months": 12 * 1000})
    ds, _ = build_from_raw(r, m, {"min_items": 6})
    assert ds.n_items == 6


# ------------------------------------------------------------------ end to end: snakemake -n refuses before any job
def _no_job_ran(out) -> None:
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert not re.search(r"^(local)?rule \w+:", out.stdout, re.M), out.stdout[-3000:]
    assert not job_counts(out.stdout)


def test_snakemake_refuses_unsafe_names_before_any_job(tmp_path):
    marker = tmp_path / "x"
    over = tmp_path / "names.yaml"
    synthetic = DEFAULT["datasets"]["Synthetic_Music"]
    over.write_text(
        yaml.safe_dump(
            {
                "datasets": {f"Syn$(touch {marker})": synthetic, "../../escape": synthetic},
                "methods": {"My Pop": {"family": "mostpop"}},
                "run_datasets": [f"Syn$(touch {marker})", "../../escape"],
                "run_methods": ["My Pop"],
            }
        )
    )
    out = snakemake("-n", "--forceall", "--configfile", str(over), check=False)
    _no_job_ran(out)
    text = out.stdout + out.stderr
    for key in (
        f"datasets: name 'Syn$(touch {marker})'",
        "datasets: name '../../escape'",
        "methods: name 'My Pop'",
        "run_methods[0]: name 'My Pop'",
    ):
        assert key in text, text[-3000:]
    assert NAME_PATTERN in text
    assert not marker.exists() and not (ROOT.parent.parent / "escape").exists()


def test_snakemake_dry_runs_names_with_punctuation(tmp_path):
    over = tmp_path / "punct.yaml"
    over.write_text(
        yaml.safe_dump(
            {
                "datasets": {"Syn.Music+2": DEFAULT["datasets"]["Synthetic_Music"]},
                "methods": {"My-Pop_v1.2+x": {"family": "mostpop"}},
                "run_datasets": ["Syn.Music+2"],
                "run_methods": ["My-Pop_v1.2+x", "BIGRec+LatentR3"],
            }
        )
    )
    out = snakemake("-n", "-p", "--forceall", "--configfile", str(over))
    counts = job_counts(out.stdout)
    assert counts["evaluate_run"] == 2 and counts["latent_warmup_sft"] == 1
    assert "--out results/Syn.Music+2/latent/LatentR3/seed0/warmup" in out.stdout
    assert "--method My-Pop_v1.2+x" in out.stdout


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "methods:\n  BIGRec:\n    decode: {length_penalty: 1.0}\n  BIGRec:\n    decode: {length_penalty: 0.0}\n",
            [":4: config: methods.BIGRec: the key 'BIGRec' is written twice (first at line 2)"],
        ),
        ("evalution: {test_limit: 8}\n", ["config: (top level): unknown key(s) ['evalution']"]),
        ("methods:\n  SASRec: {parms: {hidden: 8}}\n", ["config: methods.SASRec: unknown key(s) ['parms']"]),
        ("llm:\n  sft: {micro_batch: 0}\n", ["config: llm.sft.micro_batch: must be an integer >= 1, got 0"]),
    ],
    ids=["duplicate_key", "typo_top_level", "typo_method_level", "sft_micro_batch"],
)
def test_snakemake_refuses_bad_config_before_any_job(tmp_path, text, expected):
    over = tmp_path / "bad.yaml"
    over.write_text(text)
    out = snakemake("-n", "--forceall", "--configfile", str(over), check=False)
    _no_job_ran(out)
    for t in expected:
        assert t in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]


def test_recommender_families_are_the_registrys():
    from latentrec.baselines import registry
    from latentrec.config import RECOMMENDER_FAMILIES

    assert RECOMMENDER_FAMILIES == set(registry.FAMILIES)

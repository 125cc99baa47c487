"""`latentrec plan`: every job of the DAG costed from the data's real token counts.

The expected FLOPs are written here from the counting rules (6·N per trained token, 2·N per decoded
token, beams x target per user; `--params` gives N alone, so every weight counts on every token), on a
small processed dataset whose rows the test knows.
"""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from latentrec.data.processed_io import ProcessedDataset, export_csv_dataset
from latentrec.llm.prompts import SegmentEncoder
from latentrec.plan import REPO, make_plan, markdown, per_rule
from latentrec.rule_resources import slurm_runtime_minutes

N_PARAMS = 1.0e9
TITLES = [f"Record number {i} by The Band {'x' * (i % 5)}" for i in range(20)]


def _rows(n, offset):
    hist = [[(offset + u + k) % 20 for k in range(1 + u % 4)] for u in range(n)]
    return pd.DataFrame(
        {
            "user_id": [f"u{offset + u}" for u in range(n)],
            "history_item_ids": hist,
            "item_id": [(offset + u + 7) % 20 for u in range(n)],
            "history_ratings": None,
            "rating": float("nan"),
            "history_timestamps": None,
            "timestamp": pd.NA,
        }
    )


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    items = pd.DataFrame({"item_id": range(20), "asin": [f"B{i:04d}" for i in range(20)], "title": TITLES})
    ds = ProcessedDataset(items, _rows(40, 0), _rows(10, 3), _rows(12, 5))
    export_csv_dataset(ds, root / "PlanToy")
    cfg = {
        "datasets": {"PlanToy": {"source": "processed", "folder": str(root / "PlanToy"), "domain": "musics"}},
        "run_datasets": ["PlanToy"],
        "run_methods": ["BIGRec", "BIGRec+LatentR3"],
        "evaluation": {"test_limit": 8},
    }
    path = root / "plan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, ds


def _mean_tokens(tok, ds):
    enc = SegmentEncoder(tok)
    t = ds.titles
    prompt = [len(enc.prompt_ids([t[i] for i in h], "musics")) for h in ds.train["history_item_ids"]]
    target = [len(enc.target_ids(t[i])) for i in ds.train["item_id"]]
    return sum(prompt) / len(prompt), sum(target) / len(target)


def test_plan_costs_each_job_from_the_token_counts(small_config, smollm2_tokenizer):
    path, ds = small_config
    plan = make_plan([str(path)], "h100", mfu_train=0.5, mfu_decode=0.1, params=N_PARAMS)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    sft, rl = cfg["llm"]["sft"], cfg["llm"]["latent"]["LatentR3"]["rl"]
    p, t = _mean_tokens(smollm2_tokenizer, ds)
    assert plan.token_stats["PlanToy"].rows == {"train": 40, "valid": 10, "test": 12}
    assert plan.token_stats["PlanToy"].prompt == pytest.approx(p)
    assert plan.token_stats["PlanToy"].target == pytest.approx(t)

    by_rule = {}
    for j in plan.jobs:
        by_rule.setdefault(j.rule, []).append(j)
    # SFT: max_steps x effective batch rows (fewer than one epoch of 40), each trained once: 6N per token,
    # plus a forward over the validation rows.
    seen = min(40 * sft["max_epochs"], sft["max_steps"] * sft["effective_batch"])
    valid = min(10, sft["valid_limit"]) * sft["max_epochs"]
    (job,) = by_rule["sft_backbone"]
    assert job.flops == pytest.approx(6 * N_PARAMS * seen * (p + t) + 2 * N_PARAMS * valid * (p + t))
    assert job.seconds == pytest.approx(job.flops / (989e12 * 0.5))
    # LR-GRPO: per sample the prompt once without gradient (2N), and K continuations of latent + target
    # forward and backward to the activations (4N each; frozen LLM). --params alone: no LM head split.
    (rl_job,) = by_rule["latent_rl_point"]
    samples = min(40, rl["max_steps"] * rl["groups_per_step"])
    want = samples * (2 * N_PARAMS * p + 4 * N_PARAMS * rl["group_size"] * (1 + t)) + min(
        10, rl["valid_limit"]
    ) * 2 * N_PARAMS * (p + 1 + t)
    assert rl_job.flops == pytest.approx(want)
    # Decoding: the first 8 test users (evaluation.test_limit), prompt once + 10 beams x target tokens.
    bigrec = [j for j in by_rule["decode_llm_shard"] if j.wildcards["method"] == "BIGRec"]
    assert len(bigrec) == 1
    assert bigrec[0].flops == pytest.approx(8 * 2 * N_PARAMS * (p + 10 * t))
    latent = [j for j in by_rule["decode_llm_shard"] if j.wildcards["method"] == "BIGRec+LatentR3"]
    assert latent[0].flops == pytest.approx(8 * 2 * N_PARAMS * (p + 1 + 10 * t))
    # CPU rules are listed, costed at zero GPU time.
    assert all(j.flops == 0 for j in by_rule["evaluate_run"])

    rules = per_rule(plan)
    assert sum(r["gpu_hours"] for r in rules) == pytest.approx(
        sum(j.seconds * max(j.gpus, 1) for j in plan.jobs if j.gpus) / 3600
    )
    text = markdown(plan)
    assert "Total:" in text and "MFU 50% for training" in text and "(assumed" in text and "sft_backbone" in text


@pytest.mark.parametrize("seconds,minutes", [(0, 15), (60, 15), (150, 15), (300, 30), (3600, 135)])
def test_slurm_runtime_rounds_up_with_margin(seconds, minutes):
    got = slurm_runtime_minutes(seconds, safety=2.0, startup_min=10.0)
    assert got == minutes
    assert got % 15 == 0 and got >= 2 * seconds / 60 + 10


def test_plan_cli_writes_json_and_rejects_an_unknown_gpu(small_config, tmp_path, smollm2_tokenizer):
    path, _ = small_config
    out = tmp_path / "plan.json"
    # No venv on PATH: the plan finds the snakemake installed beside its Python.
    env = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentrec",
            "plan",
            "--configfile",
            str(path),
            "--gpu",
            "a100",
            "--params",
            "1e9",
            "--out-json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["assumptions"]["peak_flops"] == 312e12
    # The default config decodes on the CPU (0 GPUs): job time is costed, GPU time is not.
    assert data["total_gpu_hours"] == 0
    assert data["total_job_hours"] > 0 and math.isfinite(data["total_job_hours"])
    assert "Total:" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "latentrec", "plan", "--configfile", str(path), "--gpu", "tpu9"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "tpu9" in bad.stderr and "h100" in bad.stderr


def test_config_files_are_laid_over_each_other(small_config, tmp_path):
    """`--configfile a b` as Snakemake reads it: b may name a method only a defines."""
    from latentrec.commands.pipeline import add_parsers
    from latentrec.plan import dag_jobs, snakemake_executable

    path, _ = small_config
    first = yaml.safe_load(path.read_text())
    first["methods"] = {"MyD3": {"family": "llm", "decode": {"length_penalty": 0.0}}}
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(first))
    b.write_text(yaml.safe_dump({"run_methods": ["MyD3"]}))
    jobs = dag_jobs([str(a), str(b)], snakemake_executable())
    assert {j.wildcards["method"] for j in jobs if j.rule == "decode_llm_shard"} == {"MyD3"}
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    add_parsers(sub)
    ns = sub.choices["plan"].parse_args(["--configfile", str(a), str(b), "--configfile", "c.yaml"])
    assert ns.configfile == [str(a), str(b), "c.yaml"]


def test_measured_mfus_replace_the_assumed_ones(small_config, tmp_path, smollm2_tokenizer):
    path, _ = small_config
    check = tmp_path / "gpu_check.json"
    check.write_text(
        json.dumps(
            {
                "peak": "H100 (h100 bf16 peak)",
                "training": {"SFT": {"mfu": 0.2}},
                "decoding": {"BIGRec": {"floor_mfu": 0.01}},
                "real_shape": {"sft": {"mfu": 0.41}, "lr_grpo": {"mfu": 0.3}, "decode": {"mfu": 0.07}},
            }
        )
    )
    plan = make_plan([str(path)], "h100", mfu_train=0.35, mfu_decode=0.1, params=N_PARAMS, measured=str(check))
    assert (plan.assumptions["mfu_train"], plan.assumptions["mfu_decode"]) == (0.41, 0.07)
    (sft,) = [j for j in plan.jobs if j.rule == "sft_backbone"]
    assert sft.seconds == pytest.approx(sft.flops / (989e12 * 0.41))
    assert "MFU 41% for training and RL, 7% for decoding (measured:" in markdown(plan)
    # a check without its real-shape part: the pipeline's SFT MFU and mean decoding MFU
    check.write_text(
        json.dumps(
            {"training": {"SFT": {"mfu": 0.2}}, "decoding": {"A": {"floor_mfu": 0.01}, "B": {"floor_mfu": 0.03}}}
        )
    )
    plan = make_plan([str(path)], "h100", mfu_train=0.35, mfu_decode=0.1, params=N_PARAMS, measured=str(check))
    assert (plan.assumptions["mfu_train"], plan.assumptions["mfu_decode"]) == (0.2, pytest.approx(0.02))


def test_memory_column_gives_a_verdict_and_the_batch_that_fits(small_config, tmp_path, smollm2_tokenizer):
    """On a tiny Qwen2 architecture: every LLM rule gets a peak; on a GPU too small for the configured SFT
    micro-batch the plan names the largest that fits, and that one does."""
    from latentrec.plan_memory import MARGIN, Estimator
    from tests.test_memory_estimate import tiny_qwen2

    folder = tmp_path / "arch"
    tiny_qwen2().save_pretrained(folder)
    est = Estimator(folder / "config.json", cache=tmp_path / "cache.json")
    path, _ = small_config
    plan = make_plan([str(path)], "h100", 0.35, 0.1, params=N_PARAMS, memory=True, estimator=est)
    llm = [
        j for j in plan.jobs if j.rule in ("sft_backbone", "latent_warmup_sft", "latent_rl_point", "decode_llm_shard")
    ]
    assert llm and all(j.peak_bytes > 0 for j in llm) and all(j.fits_batch is None for j in llm)
    kinds = {j.step.kind for j in llm}
    assert kinds == {"sft", "latent_sft", "lr_grpo", "decode"}
    (sft,) = [j for j in llm if j.rule == "sft_backbone"]
    # a GPU that holds a micro-batch of 2 but not the configured 4: the plan names the largest that fits
    from dataclasses import replace

    from latentrec.plan import estimate_memory, load_config

    assert sft.step.shapes.micro_batch == 4
    small_gpu = est.peak("sft", replace(sft.step.shapes, micro_batch=2)) / (1 - MARGIN)
    estimate_memory([sft], load_config([str(path)]), plan.token_stats, small_gpu, est)
    assert sft.fits_batch in (2, 3)
    assert est.peak("sft", replace(sft.step.shapes, micro_batch=sft.fits_batch)) <= (1 - MARGIN) * small_gpu
    assert est.peak("sft", replace(sft.step.shapes, micro_batch=sft.fits_batch + 1)) > (1 - MARGIN) * small_gpu
    assert json.loads((tmp_path / "cache.json").read_text())  # estimates are cached
    text = markdown(plan)
    assert "peak memory / GPU | fits h100" in text and "Peak memory per distinct step" in text


def test_rl_memory_steps_follow_the_warmup_model_and_forward_samples():
    """paper.yaml's RL jobs: the memory step of an RL recipe that reuses FLR's warm-up has FLR's head and
    refinements (its model), `forward_samples` sets the samples of one forward and is the knob the plan
    names, and the FLOP count adds the scoring pass it costs."""
    from latentrec.flops import Backbone, TokenStats, latent_rl, rl_forward_samples, rl_shared_samples
    from latentrec.memory_estimate import model_config
    from latentrec.plan import load_config
    from latentrec.plan_memory import job_step

    config = load_config(["config/paper.yaml"])
    stats = {"CDs_and_Vinyl": TokenStats({"train": 100, "valid": 10, "test": 10}, 500, 120.0, 10.0, "t", 200, 30)}
    w = {"dataset": "CDs_and_Vinyl", "seed": "0", "point": "lr0.0001"}
    flr = job_step("latent_rl", {**w, "recipe": "FLR-LRGRPO"}, config, stats)
    assert (flr.kind, flr.shapes.head, flr.shapes.refine_steps) == ("lr_grpo", "flr", 2)
    assert flr.shapes.head_options == (("n_factors", 3),)  # CDs: K = 3
    assert flr.shapes.micro_batch == 16 and flr.knob == "llm.latent.FLR-LRGRPO.rl.forward_samples"
    n8 = job_step("latent_rl", {**w, "recipe": "LatentR3-N8"}, config, stats)
    assert (n8.shapes.micro_batch, n8.shapes.n_latents) == (8, 8)
    rl = config["llm"]["latent"]["LatentR3-N8"]["rl"]
    assert rl_forward_samples(rl, config["llm"]) == 8 and rl_shared_samples(rl, config["llm"]) == 16
    bb = Backbone.from_config(model_config())
    st = stats["CDs_and_Vinyl"]
    split, _ = latent_rl({**w, "recipe": "LatentR3-N8"}, config, bb, st)
    config["llm"]["latent"]["LatentR3-N8"]["rl"] = {**rl, "forward_samples": None}
    whole, _ = latent_rl({**w, "recipe": "LatentR3-N8"}, config, bb, st)
    assert split > whole  # one more forward without gradient per sample

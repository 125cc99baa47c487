"""`latentrec plan`: every job of the DAG costed from the data's real token counts.

The expected FLOPs are written here from the counting rules (6·N per trained token, 2·N per decoded
token, beams x target per user), on a small processed dataset whose rows the test knows.
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
    # LR-GRPO: per sample the prompt once and K continuations of latent + target, 4N each (frozen LLM).
    (rl_job,) = by_rule["latent_rl_point"]
    samples = min(40, rl["max_steps"] * rl["groups_per_step"])
    want = samples * 4 * N_PARAMS * (p + rl["group_size"] * (1 + t)) + min(10, rl["valid_limit"]) * 2 * N_PARAMS * (
        p + 1 + t
    )
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
    assert "Total:" in text and "assumed MFU 50%" in text and "sft_backbone" in text


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

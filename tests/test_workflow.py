"""The Snakemake workflow: lint, dry-run DAGs (default, paper, SLURM profile) and a full tiny run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=ROOT, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    counts, on = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


def test_lint_is_clean():
    out = snakemake("--lint", check=False)
    assert "Congratulations" in out.stdout + out.stderr, out.stdout + out.stderr


def test_paper_dry_run_has_every_dataset_and_seed():
    out = snakemake("-n", "-p", "--configfile", "config/paper.yaml", "--forceall")
    counts = job_counts(out.stdout)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    n_runs = len(paper["seeds"]) * sum(  # ablation methods name their datasets
        len(set(paper["run_datasets"]) & set(paper["methods"][m].get("datasets", paper["run_datasets"])))
        for m in paper["run_methods"]
    )
    assert counts["process_raw_dataset"] == 4
    assert counts["download_amazon2018"] == 8  # reviews + meta per category
    assert counts["evaluate_run"] == n_runs
    for cat in ("Toys_and_Games", "CDs_and_Vinyl", "Video_Games", "Musical_Instruments"):
        assert f"resources/amazon2018/meta_{cat}.json.gz" in out.stdout
    # The Gaussian-policy LR-GRPO, the project's finding, runs on Toys and CDs as a labelled extra row.
    gauss = {
        d
        for d in ("Toys_and_Games", "CDs_and_Vinyl", "Video_Games", "Musical_Instruments")
        if f"results/{d}/BIGRec+LatentR3-GaussPolicy/seed4/metrics.json" in out.stdout
    }
    assert gauss == {"Toys_and_Games", "CDs_and_Vinyl"}
    assert paper["llm"]["latent"]["LatentR3-GaussPolicy"]["rl"]["policy"] == "latent"
    report = next(b for b in _job_blocks(out.stdout, "report_latentr3"))
    assert '"BIGRec+LatentR3-GaussPolicy": "BIGRec+LatentR3, Gaussian-policy RL (not the paper' in report
    assert "results/tables/latentr3_fig4_grpo.png" in report  # paper.yaml runs the original GRPO
    flr = next(b for b in _job_blocks(out.stdout, "report_flr"))
    assert '"figure6_dataset": "Video_Games"' in flr


def test_method_seeds_and_init_seed_shape_the_dag(tmp_path):
    """A method's `seeds` limits its runs; `init_seed` makes every seed's warm-up start from one SFT."""
    over = tmp_path / "seeds.yaml"
    over.write_text(
        yaml.safe_dump(
            {
                "seeds": [0, 1],
                "methods": {"BIGRec": {"seeds": [0]}, "CoT": {"seeds": [1]}},
                "llm": {"latent": {"LatentR3": {"init": "sft", "init_seed": 0}}},
                "report": {"flr": {"timing": {"methods": ["BIGRec", "BIGRec+LatentR3", "BIGRec+FLR", "CoT"]}}},
            }
        )
    )
    out = snakemake("-n", "--forceall", "--configfile", str(over))
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    counts = job_counts(out.stdout)
    assert counts["evaluate_run"] == 2 * len(default["run_methods"]) - 2
    assert "results/Synthetic_Music/BIGRec/seed1/" not in out.stdout
    assert "results/Synthetic_Music/CoT/seed0/" not in out.stdout
    assert "results/Synthetic_Music/CoT/seed1/inference_time.json" in out.stdout  # Figure 9 on its first seed
    assert "sft/seed1/model" in out.stdout  # D3 seed 1 still needs its own SFT ...
    warmups = [b for b in out.stdout.split("\n\n") if "rule latent_warmup_sft:" in b and "LatentR3/seed1" in b]
    assert warmups and "results/Synthetic_Music/sft/seed0/model" in warmups[0]  # ... LatentR3 seed 1 does not


def test_baselines_only_config_times_no_llm(tmp_path):
    """Figure 9 may time methods outside `run_methods`, but only where one of its methods runs."""
    over = tmp_path / "baselines.yaml"
    over.write_text(
        yaml.safe_dump(
            {"run_methods": ["MostPop", "SASRec"], "report": {"flr": {"timing": {"methods": ["BIGRec", "CoT"]}}}}
        )
    )
    out = snakemake("-n", "--forceall", "--configfile", str(over))
    assert "time_inference" not in out.stdout and "sft_backbone" not in out.stdout
    assert job_counts(out.stdout)["evaluate_run"] == 2 * len(
        yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["seeds"]
    )


def test_default_times_nothing_and_demo_full_times_figure9():
    """The default stays within its minutes; demo_full.yaml adds Figure 9's timings and CoT at length."""
    default_out = snakemake("-n", "--forceall").stdout
    default = job_counts(default_out)
    full = snakemake("-n", "-p", "--forceall", "--configfile", "config/demo_full.yaml").stdout
    # No original GRPO in the default: LatentR3 Figure 4 is not among its outputs (the run summary says so).
    assert "results/tables/latentr3_fig2_popularity.png" in default_out and "latentr3_fig4_grpo" not in default_out
    assert "time_inference" not in default and job_counts(full)["time_inference"] == 4
    assert default["evaluate_run"] == job_counts(full)["evaluate_run"]  # the same methods on the table
    assert 'max_reasoning_tokens": 32' in full


def _job_blocks(output: str, rule: str) -> list[str]:
    """A dry run's jobs of `rule`: each block starts at its `[Mon Nov 30 ...]` time stamp line."""
    return [b for b in re.split(r"\n(?=\[\w{3} \w{3} )", output) if f"rule {rule}:" in b]


def test_slurm_profile_dry_run():
    """Resources come from the rules (the profile holds none): memory and minutes on every cluster job,
    GPU jobs on one node (CPUs = threads: tests/test_slurm_real.py reads them back from SLURM)."""
    out = snakemake("-n", "--profile", "profiles/slurm", "--configfile", "config/paper.yaml", "--forceall").stdout
    assert "process_raw_dataset" in out
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert not {"default-resources", "set-resources", "set-threads"} & set(profile)
    sft = _job_blocks(out, "sft_backbone")
    assert sft and all(re.search(r"runtime=\d+, nodes=1, gpu=2, mem_mb=24000", b) for b in sft), sft[0]
    fit = _job_blocks(out, "fit_grid_point")[0]
    assert re.search(r"runtime=\d+, mem_mb=\d+", fit) and "gpu=" not in fit
    decode = _job_blocks(out, "decode_llm_shard")[0]
    assert re.search(r"nodes=1, gpu=1, mem_mb=12000", decode)


def test_llm_runtime_scales_with_rows_and_epochs(tmp_path):
    """An SFT job asks the minutes `latentrec plan` counts for its rows and epochs (rule_resources.runtime_minutes)."""

    def sft_minutes(*args):
        out = snakemake("-n", "--forceall", *args).stdout
        return [int(re.search(r"runtime=(\d+)", b).group(1)) for b in _job_blocks(out, "sft_backbone")]

    small = sft_minutes()  # config.yaml: 2 steps of 8 rows
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump({"llm": {"sft": {"max_steps": None, "train_limit": 4096, "max_epochs": 2}}}))
    large = sft_minutes("--configfile", str(big))
    assert len(small) == 1 and small[0] == 15 and len(large) == 1  # 16 rows: the 10-min start-up, rounded up
    # latentrec plan's count: 4096 rows x 2 epochs; per row 6 FLOPs per weight of the body (N = 134.5M for
    # SmolLM2, less its 49,152 x 576 vocabulary matrix) on all 125 + 10.5 tokens, and 6 per weight of the LM
    # head on the 10.5 target tokens only (the loss computes logits there alone); on a CPU at 1e11 FLOP/s peak
    # and 35% MFU, x2 margin + 10 min (attention, and validation, add a little: the window's 60 min).
    head = 49152 * 576
    per_row = 6 * (134.5e6 - head) * (125 + 10.5) + 6 * head * 10.5
    train_s = 4096 * 2 * per_row / (1e11 * 0.35)
    assert 2 * train_s / 60 + 10 <= large[0] <= 2 * train_s / 60 + 10 + 60


def test_empty_slurm_account_stops_before_any_job():
    out = snakemake("-n", "--default-resources", 'slurm_account=""', check=False)
    assert out.returncode != 0 and "slurm_account is empty" in out.stdout + out.stderr


def test_bad_config_type_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [zero]\n")
    out = snakemake("-n", "--configfile", str(bad), check=False)
    assert out.returncode != 0 and "seeds" in out.stdout + out.stderr


@pytest.mark.slow
def test_full_tiny_run_end_to_end(tmp_path, smollm2_tokenizer):
    """Synthetic raw files → split → MostPop, SASRec and the LLM chain (fetch, SFT, sharded decode,
    gather) on a tiny random Llama → metrics → tables, in a scratch working directory."""
    cfg = tiny_run_config(tmp_path, smollm2_tokenizer)
    cfg["seeds"] = [0, 1]
    cfg["methods"]["SASRec"]["params"].update(max_epochs=2, hidden=16)
    cfg["methods"]["SASRec-CE"]["params"].update(max_epochs=2, hidden=16)
    cfg["llm"]["decode_shards"] = 2
    cfg["llm"]["sft"].update(max_steps=1, micro_batch=4, effective_batch=4, train_limit=8, valid_limit=4)
    for m in ("Base", "CoT", "BIGRec", "D3", "BIGRec+LatentR3", "BIGRec+FLR"):
        cfg["methods"][m]["decode"].update(num_beams=2, num_return=2, max_new_tokens=24)
    cfg["methods"]["CoT"]["decode"]["cot"]["max_reasoning_tokens"] = 3
    cfg["llm"]["latent"]["LatentR3"]["rl"].update(group_size=2, groups_per_step=2, max_steps=1, valid_limit=4)
    cfg["report"]["flr"]["timing"].update(
        rows=3, decode={"batch_size": 2}, methods=["BIGRec", "BIGRec+LatentR3", "BIGRec+FLR", "CoT"]
    )
    cfg["report"]["flr"]["factors"]["rows"] = 4
    cfg["evaluation"]["test_limit"] = 6
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake("--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--cores", "2")
    table = (tmp_path / "results" / "tables" / "table1.md").read_text()
    for method, match in (
        ("MostPop", "id"),
        ("SASRec", "id"),
        ("Base", "title"),
        ("CoT", "title"),
        ("BIGRec", "title"),
        ("D3", "title"),
        ("BIGRec+LatentR3", "title"),
        ("BIGRec+FLR", "title"),
    ):
        assert f"| {method} — by {match} |" in table  # beside the published values: the row's own matching
    assert "| SASRec (CE) — by id |" in table  # SASRec-CE's display name
    assert "| Synthetic_Music | BIGRec |" in (tmp_path / "results/tables/llm_vs_strongest.md").read_text()
    gains = (tmp_path / "results/tables/latentr3_gains.md").read_text()
    assert "| Synthetic_Music | BIGRec+LatentR3 | BIGRec | N@10 |" in gains
    assert (tmp_path / "results/tables/latentr3_fig2_popularity.png").stat().st_size > 0
    assert not (tmp_path / "results/tables/latentr3_fig4_grpo.png").exists()
    rl = json.loads((tmp_path / "results/Synthetic_Music/latent/LatentR3/seed1/rl/default/rl_log.json").read_text())
    assert rl["steps"] == 1 and rl["trainable_parameters"] == 3 * (64 * 64 + 64)
    m = json.loads((tmp_path / "results/Synthetic_Music/MostPop/seed1/metrics.json").read_text())
    assert m["seed"] == 1 and 0 <= m["metrics"]["HR@10"] <= 1 and m["metrics"]["n_rows"] == 6
    d3 = yaml.safe_load((tmp_path / "results/Synthetic_Music/D3/seed0/config.yaml").read_text())
    assert d3["generation_config"]["length_penalty"] == 0.0 and d3["generation_config"]["do_sample"] is False
    assert (tmp_path / "results/Synthetic_Music/data/csv/info.txt").exists()
    assert (tmp_path / "results/Synthetic_Music/sft/seed0/model/config.json").exists()
    # FLR: the warm-up model (K 4, T 2), its factors, Table 2 with CoT, timings (CoT beam 1), figures.
    tables = tmp_path / "results/tables"
    head = json.loads((tmp_path / "results/Synthetic_Music/latent/FLR/seed0/warmup/model/latent_head.json").read_text())
    assert head["kind"] == "flr" and head["options"]["n_factors"] == 4 and head["refine_steps"] == 2
    t2 = (tables / "flr_table2.md").read_text()
    for row in ("FLR (BIGRec+FLR)", "CoT (CoT)", "LatentR3 (BIGRec+LatentR3)"):
        assert f"| {row} | 2 |" in t2
    assert "| Synthetic_Music |" in t2 and "| N@10 |" in t2  # FLR against the strongest baseline
    assert (
        "| Synthetic_Music | BIGRec+FLR | with constraints | 4 | 4 |" in (tables / "flr_disentanglement.md").read_text()
    )
    fig9 = (tables / "flr_fig9_inference_time.md").read_text()
    assert (
        "| Synthetic_Music | CoT | 1 | 2 | 3 | 1 |" in fig9
        and "| Synthetic_Music | BIGRec+FLR | 2 | 2 | 3 | 1 |" in fig9
    )
    for name in (
        "fig4_factor_similarity",
        "fig6_factor_attention",
        "fig7_popularity",
        "fig8_factors_k",
        "fig9_inference_time",
    ):
        assert (tables / f"flr_{name}.png").stat().st_size > 0
    cot = json.loads((tmp_path / "results/Synthetic_Music/CoT/seed0/train_log.json").read_text())
    lengths = [n for s in cot["shards"] for n in s["per_row"]["reasoning_tokens"]]
    assert len(lengths) == 6 and all(0 <= n <= 3 for n in lengths)
    assert cot["shards"][0]["generation_config"]["cot"] == {"max_reasoning_tokens": 3}

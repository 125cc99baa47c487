"""The Snakemake workflow: lint, dry-run DAGs (default, paper, SLURM profile) and a full tiny run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
    out = snakemake("-n", "--configfile", "config/paper.yaml", "--forceall")
    counts = job_counts(out.stdout)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    n_runs = len(paper["seeds"]) * sum(  # ablation methods name their datasets
        len(set(paper["run_datasets"]) & set(paper["methods"][m].get("datasets", paper["run_datasets"])))
        for m in paper["run_methods"])
    assert counts["process_raw_dataset"] == 4
    assert counts["download_amazon2018"] == 8  # reviews + meta per category
    assert counts["evaluate_run"] == n_runs
    for cat in ("Toys_and_Games", "CDs_and_Vinyl", "Video_Games", "Musical_Instruments"):
        assert f"resources/amazon2018/meta_{cat}.json.gz" in out.stdout


def test_slurm_profile_dry_run():
    out = snakemake("-n", "--profile", "profiles/slurm", "--configfile", "config/paper.yaml", "--forceall")
    assert "process_raw_dataset" in out.stdout


def test_bad_config_type_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [zero]\n")
    out = snakemake("-n", "--configfile", str(bad), check=False)
    assert out.returncode != 0 and "seeds" in out.stdout + out.stderr


@pytest.mark.slow
def test_full_tiny_run_end_to_end(tmp_path, smollm2_tokenizer):
    """Synthetic raw files → split → MostPop, SASRec and the LLM chain (fetch, SFT, sharded decode,
    gather) on a tiny random Llama → metrics → tables, in a scratch working directory."""
    from latentrec.llm.backbone import tiny_llama_like

    model_dir = tmp_path / "tiny_model"
    tiny_llama_like(smollm2_tokenizer).save_pretrained(model_dir)
    smollm2_tokenizer.save_pretrained(model_dir)

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["datasets"]["Synthetic_Music"]["synthetic"].update(n_users=600, n_items=200)
    cfg["datasets"]["Synthetic_Music"]["processing"]["min_items"] = 50
    cfg["seeds"] = [0, 1]
    cfg["report"]["paper_results"] = str(ROOT / "config" / "paper_results.yaml")
    cfg["methods"]["SASRec"]["params"].update(max_epochs=2, hidden=16)
    cfg["llm"]["models"] = {"tiny": {"spec": str(model_dir)}}
    cfg["llm"].update(backbone="tiny", decode_shards=2)
    cfg["llm"]["sft"].update(max_steps=1, micro_batch=4, effective_batch=4, train_limit=8, valid_limit=4)
    for m in ("Base", "BIGRec", "D3", "BIGRec+LatentR3"):
        cfg["methods"][m]["decode"].update(num_beams=2, num_return=2, max_new_tokens=24)
    cfg["llm"]["latent"]["LatentR3"]["rl"].update(group_size=2, groups_per_step=2, max_steps=1, valid_limit=4)
    cfg["evaluation"]["test_limit"] = 6
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake("--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--cores", "2")
    table = (tmp_path / "results" / "tables" / "table1.md").read_text()
    for method in ("MostPop", "SASRec", "Base", "BIGRec", "D3", "BIGRec+LatentR3"):
        assert f"| {method} |" in table
    gains = (tmp_path / "results/tables/latentr3_gains.md").read_text()
    assert "| Synthetic_Music | BIGRec+LatentR3 | BIGRec | N@10 |" in gains
    assert (tmp_path / "results/tables/latentr3_fig3_popularity.png").stat().st_size > 0
    rl = json.loads((tmp_path / "results/Synthetic_Music/latent/LatentR3/seed1/rl/default/rl_log.json").read_text())
    assert rl["steps"] == 1 and rl["trainable_parameters"] == 3 * (64 * 64 + 64)
    m = json.loads((tmp_path / "results/Synthetic_Music/MostPop/seed1/metrics.json").read_text())
    assert m["seed"] == 1 and 0 <= m["metrics"]["HR@10"] <= 1 and m["metrics"]["n_rows"] == 6
    d3 = yaml.safe_load((tmp_path / "results/Synthetic_Music/D3/seed0/config.yaml").read_text())
    assert d3["generation_config"]["length_penalty"] == 0.0 and d3["generation_config"]["do_sample"] is False
    assert (tmp_path / "results/Synthetic_Music/data/csv/info.txt").exists()
    assert (tmp_path / "results/Synthetic_Music/sft/seed0/model/config.json").exists()

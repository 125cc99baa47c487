"""docs/extending.md, run: each recipe's module and config entry, written out verbatim from the page into a scratch
folder (the module on PYTHONPATH, as the page says), go through the DAG; the head and the baseline also through
a tiny real run. The page's paths and rules exist (the checker of docs/map.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_run_config
from tests.test_docs_map import missing_references
from tests.test_workflow import job_counts

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"


def page_blocks() -> dict[str, str]:
    """{name: code} of every fenced block the page marks `<!-- test: name -->`."""
    text = PAGE.read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- test: (\S+) -->\n```\w*\n(.*?)```", text, re.S))


def write_block(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page_blocks()[name])
    return path


def scratch(tmp_path: Path, cfg: dict | None = None) -> Path:
    """A working directory with config/config.yaml (the default unless `cfg`) and the page's my_ext/ folder."""
    if cfg is None:
        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        cfg["report"]["paper_results"] = str(ROOT / "config" / "paper_results.yaml")
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "my_ext").mkdir(exist_ok=True)
    return tmp_path


def snakemake(workdir: Path, *args, pythonpath: Path | None = None, check=True):
    """`snakemake --snakefile ROOT/Snakefile --directory workdir ...`, with PYTHONPATH set as a user would."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # only what the page tells the user to set
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_every_recipe_has_its_blocks_and_the_page_names_only_what_exists():
    assert sorted(page_blocks()) == [
        "my_ext/datasets.yaml",
        "my_ext/markov_chain.py",
        "my_ext/markov_chain.yaml",
        "my_ext/mean_pool.py",
        "my_ext/mean_pool.yaml",
        "my_ext/recipe.yaml",
    ]
    problems = missing_references(PAGE.read_text(encoding="utf-8"))
    assert not problems, "docs/extending.md:\n  " + "\n  ".join(problems)


def test_readme_and_map_link_the_page():
    for doc in ("README.md", "docs/map.md"):
        assert "extending.md" in (ROOT / doc).read_text(encoding="utf-8"), doc


def test_a_class_name_resolves_or_says_why_it_cannot():
    from latentrec.baselines.registry import family_class
    from latentrec.baselines.sequential import SASRec
    from latentrec.errors import InputError
    from latentrec.llm.latent import LatentRATT, head_class, head_name

    assert family_class("latentrec.baselines.sequential:SASRec") is family_class("sasrec") is SASRec
    assert head_class("latentrec.llm.latent:LatentRATT") is LatentRATT
    assert head_name(LatentRATT(8)) == "latentratt"  # a registered head is saved under its short name
    with pytest.raises(InputError, match="write it as `module:Class`"):
        head_class("latentrec.llm.latent:")
    with pytest.raises(InputError, match="has no class 'SASRec' deriving from LatentHead"):
        head_class("latentrec.baselines.sequential:SASRec")
    with pytest.raises(InputError, match="cannot import 'no_such_module'.*PYTHONPATH"):
        family_class("no_such_module:Rec")


def test_baseline_module_and_entry_make_its_jobs(tmp_path):
    work = scratch(tmp_path)
    write_block(work, "my_ext/markov_chain.py")
    over = write_block(work, "my_ext/markov_chain.yaml")
    out = snakemake(work, "-n", "--configfile", str(over), pythonpath=work / "my_ext").stdout
    assert job_counts(out)["fit_predict_recommender"] == 2  # MostPop and the new family
    assert "results/Synthetic_Music/Markov/seed0/predictions.parquet" in out
    assert "results/Synthetic_Music/Markov/seed0/metrics.json" in out


def test_baseline_module_off_the_path_and_a_bad_param_stop_before_any_job(tmp_path):
    work = scratch(tmp_path)
    write_block(work, "my_ext/markov_chain.py")
    over = write_block(work, "my_ext/markov_chain.yaml")
    out = snakemake(work, "-n", "--configfile", str(over), check=False)  # no PYTHONPATH
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "methods.Markov.family: recommender family 'markov_chain:MarkovChain': cannot import" in said
    bad = work / "my_ext" / "bad.yaml"
    bad.write_text(over.read_text().replace("pop_weight: 0.05", "pop_weight: fast"))
    out = snakemake(work, "-n", "--configfile", str(bad), pythonpath=work / "my_ext", check=False)
    assert out.returncode != 0 and "methods.Markov.params.pop_weight: must be a number" in out.stdout + out.stderr


def test_head_module_and_entry_make_its_jobs(tmp_path):
    work = scratch(tmp_path)
    write_block(work, "my_ext/mean_pool.py")
    over = write_block(work, "my_ext/mean_pool.yaml")
    out = snakemake(work, "-n", "--configfile", str(over), pythonpath=work / "my_ext").stdout
    counts = job_counts(out)
    assert counts["latent_warmup_sft"] == 1 and counts["latent_rl_point"] == 1 and counts["select_latent_rl"] == 1
    assert "results/Synthetic_Music/latent/MeanPool/seed0/warmup/model" in out
    assert "results/Synthetic_Music/BIGRec+MeanPool/seed0/metrics.json" in out
    # head_options are checked against the head's constructor, as for the built-in heads
    bad = work / "my_ext" / "bad.yaml"
    bad.write_text(over.read_text().replace("init_std: 0.02", "init_sd: 0.02"))
    out = snakemake(work, "-n", "--configfile", str(bad), pythonpath=work / "my_ext", check=False)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "llm.latent.MeanPool.head_options: head 'mean_pool:MeanPoolHead' has no option(s) ['init_sd']" in said


def test_llm_recipe_entries_make_warmup_rl_grid_and_decode_jobs(tmp_path):
    work = scratch(tmp_path)
    over = write_block(work, "my_ext/recipe.yaml")
    out = snakemake(work, "-n", "--configfile", str(over)).stdout
    counts = job_counts(out)
    assert counts["latent_warmup_sft"] == 2  # LatentR3 and LatentR3-N2
    assert counts["latent_rl_point"] == 1 + 2  # LatentR3's one point, the new recipe's two learning rates
    for point in ("lr0.0001", "lr1e-05"):
        assert f"results/Synthetic_Music/latent/LatentR3-N2/seed0/rl/{point}/rl_log.json" in out
    assert "results/Synthetic_Music/BIGRec+LatentR3-N2/seed0/shards/1-of-1.parquet" in out


def test_dataset_entries_make_each_sources_jobs(tmp_path):
    work = scratch(tmp_path)
    over = write_block(work, "my_ext/datasets.yaml")
    split = work / "splits" / "CDs_and_Vinyl_5_2015-10-2018-11"
    split.mkdir(parents=True)
    for name in ("info.txt", "train.csv", "valid.csv", "test.csv"):  # a dry run only checks they are there
        (split / name).write_text("")
    out = snakemake(work, "-n", "--configfile", str(over)).stdout
    counts = job_counts(out)
    assert counts["synthesize_dataset"] == 2  # Synthetic_Music and Synthetic_Books
    assert counts["download_amazon2018"] == 2  # Toys_and_Games' reviews and meta
    assert counts["import_processed_dataset"] == 1 and counts["process_raw_dataset"] == 3
    assert counts["fit_predict_recommender"] == 4 * 2  # MostPop and SASRec on each of the four
    assert "resources/amazon2018/Toys_and_Games_5.json.gz" in out
    for ds in ("Toys_and_Games", "CDs_split", "Synthetic_Books"):
        assert f"results/{ds}/SASRec/seed0/metrics.json" in out


@pytest.mark.slow
def test_toy_head_and_baseline_train_and_decode_through_the_rules(tmp_path, smollm2_tokenizer):
    """The page's head: warm-up SFT, one LR-GRPO step and a decode on a tiny random Llama; its baseline fitted
    and ranked; both scored. The jobs find the modules through PYTHONPATH alone."""
    cfg = tiny_run_config(tmp_path, smollm2_tokenizer)
    cfg["llm"]["latent"].update(yaml.safe_load(page_blocks()["my_ext/mean_pool.yaml"])["llm"]["latent"])
    for name in ("my_ext/mean_pool.yaml", "my_ext/markov_chain.yaml"):
        cfg["methods"].update(yaml.safe_load(page_blocks()[name])["methods"])
    cfg["llm"]["sft"].update(max_steps=1, micro_batch=4, effective_batch=4, train_limit=8, valid_limit=4)
    cfg["llm"]["latent"]["MeanPool"]["rl"].update(
        group_size=2, groups_per_step=2, max_steps=1, train_limit=8, valid_limit=4
    )
    cfg["methods"]["BIGRec+MeanPool"]["decode"].update(num_beams=2, num_return=2, max_new_tokens=24)
    cfg["evaluation"]["test_limit"] = 4
    cfg["run_methods"] = ["Markov", "BIGRec+MeanPool"]
    work = scratch(tmp_path, cfg)
    write_block(work, "my_ext/mean_pool.py")
    write_block(work, "my_ext/markov_chain.py")
    targets = [f"results/Synthetic_Music/{m}/seed0/metrics.json" for m in cfg["run_methods"]]
    snakemake(work, "--cores", "2", *targets, pythonpath=work / "my_ext")
    model = work / "results/Synthetic_Music/latent/MeanPool/seed0/rl/default/model"
    head = json.loads((model / "latent_head.json").read_text())
    assert head["kind"] == "mean_pool:MeanPoolHead" and head["options"]["init_std"] == 0.02
    rl = json.loads((work / "results/Synthetic_Music/latent/MeanPool/seed0/rl/default/rl_log.json").read_text())
    assert rl["steps"] == 1 and rl["trainable_parameters"] == 64 * 64 + 64  # only the head's projection trains
    for m in cfg["run_methods"]:
        metrics = json.loads((work / f"results/Synthetic_Music/{m}/seed0/metrics.json").read_text())["metrics"]
        assert metrics["n_rows"] == 4 and 0 <= metrics["HR@10"] <= 1
    fit = json.loads((work / "results/Synthetic_Music/Markov/seed0/train_log.json").read_text())
    assert fit["transitions"] > 0

"""SFT learning-rate grid (issue 16 item 6): `llm.sft_grid` (and a recipe's `sft_grid`) fan the BIGRec/D3 SFT
and the latent warm-ups out into one job per point; `select-sft` keeps the lowest validation loss."""

import json
import math

import pytest
import yaml

from latentrec.commands.main import main
from latentrec.config import sft_grid_points
from latentrec.errors import InputError
from latentrec.llm.backbone import resolve_model
from latentrec.llm.selection import lowest_valid_loss
from tests.test_config_errors import merged
from tests.test_workflow import ROOT, job_counts, snakemake


def _point(root, name, loss, model=True):
    """A finished grid point folder as `sft` / `latent-sft` leave it (train_log.json, model/)."""
    folder = root / name
    folder.mkdir(parents=True)
    if model:
        (folder / "model").mkdir()
    (folder / "train_log.json").write_text(
        json.dumps({"best_valid_loss": loss, "epochs": 1, "steps": 2, "seconds": 1.0, "history": []})
    )
    return str(folder)


def _select(tmp_path, points):
    out = tmp_path / "selected.json"
    main(["select-sft", "--points", *points, "--out", str(out)])
    return json.loads(out.read_text()), out


def test_select_sft_keeps_the_lowest_validation_loss(tmp_path):
    points = [_point(tmp_path, "lr0.003", 2.5), _point(tmp_path, "lr0.0003", 1.25), _point(tmp_path, "lr3e-05", 1.5)]
    sel, out = _select(tmp_path, points)
    assert sel["point"] == "lr0.0003" and sel["model"] == str(tmp_path / "lr0.0003" / "model")
    assert list(sel["candidates"]) == points and sel["candidates"][points[0]]["best_valid_loss"] == 2.5
    assert resolve_model(out) == tmp_path / "lr0.0003" / "model"  # what decode / latent-sft / latent-rl load


@pytest.mark.parametrize("order, chosen", [(["a", "b", "c"], "b"), (["a", "c", "b"], "c")])
def test_select_sft_tie_goes_to_the_first_listed(tmp_path, order, chosen):
    losses = {"a": 1.5, "b": 1.0, "c": 1.0}
    sel, _ = _select(tmp_path, [_point(tmp_path, p, losses[p]) for p in order])
    assert sel["point"] == chosen


def test_diverged_points_are_never_chosen():
    assert (
        lowest_valid_loss(
            {
                "a": {"best_valid_loss": math.nan},
                "b": {"best_valid_loss": math.inf},
                "c": {"best_valid_loss": 9.0},
                "d": {"best_valid_loss": None},
            }
        )
        == "c"
    )
    with pytest.raises(InputError, match="no SFT grid point reached a finite validation loss"):
        lowest_valid_loss({"a": {"best_valid_loss": math.inf}, "b": {"best_valid_loss": math.nan}})


def test_select_sft_refuses_an_unfinished_point(tmp_path, capsys):
    points = [_point(tmp_path, "lr0.003", 2.5), str(tmp_path / "lr0.0003")]
    with pytest.raises(SystemExit):
        main(["select-sft", "--points", *points, "--out", str(tmp_path / "selected.json")])
    assert "lr0.0003/train_log.json: missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a log without its model
        main(["select-sft", "--points", _point(tmp_path, "x", 1.0, model=False), "--out", str(tmp_path / "s.json")])
    assert not (tmp_path / "selected.json").exists() and not (tmp_path / "s.json").exists()


def test_recipes_inherit_the_global_grid_unless_they_set_their_own():
    cfg = merged(
        {
            "llm": {
                "sft_grid": {"lr": [3.0e-3, 3.0e-4]},
                "latent": {"FLR": {"sft_grid": None}, "LatentR3": {"sft_grid": {"lr": [1.0e-4]}}},
            }
        }
    )
    assert {p: c["lr"] for p, c in sft_grid_points(cfg).items()} == {"lr0.003": 3.0e-3, "lr0.0003": 3.0e-4}
    assert sft_grid_points(cfg)["lr0.003"]["micro_batch"] == cfg["llm"]["sft"]["micro_batch"]  # llm.sft underneath
    assert sft_grid_points(cfg, "FLR") == {}  # null: no grid
    assert list(sft_grid_points(cfg, "LatentR3")) == ["lr0.0001"]
    inherit = merged({"llm": {"sft_grid": {"lr": [3.0e-3, 3.0e-4]}}})
    assert list(sft_grid_points(inherit, "FLR")) == ["lr0.003", "lr0.0003"]
    assert sft_grid_points(merged({})) == {} and sft_grid_points(merged({}), "FLR") == {}  # config.yaml: none


def test_grid_overlay_dag(tmp_path):
    """A grid on the default config: 2 backbone points + select_sft; LatentR3 (init: sft) warms up per point
    from the chosen SFT model; FLR (sft_grid: null) keeps its single warm-up."""
    over = tmp_path / "grid.yaml"
    over.write_text(
        yaml.safe_dump(
            {
                "llm": {
                    "sft_grid": {"lr": [3.0e-4, 1.0e-4]},
                    "latent": {"FLR": {"sft_grid": None}, "LatentR3": {"init": "sft"}},
                }
            }
        )
    )
    out = snakemake("-n", "-p", "--forceall", "--configfile", str(over)).stdout
    counts = job_counts(out)
    assert counts["sft_backbone"] == 2 and counts["select_sft"] == 1
    assert counts["latent_warmup_point"] == 2 and counts["select_latent_warmup"] == 1
    assert counts["latent_warmup_sft"] == 1  # FLR
    warmups = [b for b in out.split("\n\n") if "rule latent_warmup_point:" in b]
    assert all("--model results/Synthetic_Music/sft/seed0/selected.json" in b for b in warmups)
    assert "--model results/Synthetic_Music/latent/LatentR3/seed0/warmup/selected.json" in out  # RL


def test_paper_dry_run_searches_the_sft_learning_rate():
    out = snakemake("-n", "-p", "--forceall", "--configfile", "config/paper.yaml").stdout
    counts = job_counts(out)
    paper = merged(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    assert paper["llm"]["sft_grid"] == {"lr": [3.0e-3, 3.0e-4, 3.0e-5]}  # LatentR3 appendix C
    runs = len(paper["run_datasets"]) * len(paper["seeds"])
    assert counts["sft_backbone"] == 3 * runs and counts["select_sft"] == runs
    assert counts["latent_warmup_point"] == 3 * counts["select_latent_warmup"] > 0
    assert "latent_warmup_sft" not in counts  # every warm-up of paper.yaml is searched
    grid = "results/Toys_and_Games/sft/seed0/grid"
    for point in ("lr0.003", "lr0.0003", "lr3e-05"):
        assert f"--out {grid}/{point} " in out
    assert (
        f"select-sft --points {grid}/lr0.003 {grid}/lr0.0003 {grid}/lr3e-05 "
        "--out results/Toys_and_Games/sft/seed0/selected.json"
    ) in out  # the grid's order: ties to the first
    assert "decode --data results/Toys_and_Games/data --model results/Toys_and_Games/sft/seed0/selected.json" in out
    for point in ("lr0.003", "lr0.0003", "lr3e-05"):  # LatentR3's warm-up: the global grid
        assert f"--out results/Toys_and_Games/latent/LatentR3/seed0/warmup/grid/{point} " in out
    for point in ("lr0.0003", "lr5e-05", "lr1e-05"):  # FLR's warm-up: the FLR paper's own grid
        assert f"--out results/Toys_and_Games/latent/FLR/seed0/warmup/grid/{point} " in out
    assert "latent/FLR/seed0/warmup/grid/lr0.003 " not in out
    assert "--model results/Toys_and_Games/latent/LatentR3/seed0/warmup/selected.json" in out

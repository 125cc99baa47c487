"""Training you can watch: every training command logs its per-step scalars through accelerate's tracker, and
TensorBoard reads back exactly what train_log.json / rl_log.json hold; the curve figure beside each log."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from latentrec.commands.main import main
from latentrec.data.processed_io import save_dataset
from latentrec.errors import InputError
from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.tracking import check_tracker
from tests.latent_toys import TITLES, catalog_dataset, tiny_reasoner

ROOT = Path(__file__).resolve().parents[1]
# 8 rows, 4 per step: 2 steps per epoch, 2 epochs (a validation loss at steps 2 and 4).
SFT = {
    "lr": 1e-3,
    "effective_batch": 4,
    "micro_batch": 2,
    "max_epochs": 2,
    "warmup_steps": 1,
    "train_limit": 8,
    "checkpoint_every": 0,
    "valid_limit": 4,
    "train_sample": "first",
    "mixed_precision": "no",
}
# FLR-GRPO with a KL term: every RL scalar (rewards, advantages, exact match, regularisers, KL) is logged.
FLR_GRPO = {
    "lr": 1e-2,
    "group_size": 3,
    "groups_per_step": 4,
    "max_steps": 3,
    "warmup_steps": 0,
    "train_limit": 12,
    "valid_limit": 4,
    "mixed_precision": "no",
    "reward": "hybrid",
    "advantage": "base",
    "regularisers": True,
    "beta": 0.04,
}


@pytest.fixture(scope="module")
def world(smollm2_tokenizer, tmp_path_factory):
    """24 users over 6 titles, a tiny backbone and a tiny FLR warm-up model."""
    tmp = tmp_path_factory.mktemp("tracking")
    n = 24
    ds = catalog_dataset(
        TITLES, [[(u + k) % 6 for k in range(1 + u % 3)] for u in range(n)], [(u + 3) % 6 for u in range(n)]
    )
    for df in (ds.train, ds.valid, ds.test):  # the columns a saved dataset carries
        df["history_ratings"] = [[5.0] * len(h) for h in df["history_item_ids"]]
        df["history_timestamps"] = [list(range(len(h))) for h in df["history_item_ids"]]
        df["rating"], df["timestamp"] = 5.0, 100
    save_dataset(ds, tmp / "data")
    tok = smollm2_tokenizer
    tiny_llama_like(tok).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    t = copy.deepcopy(tok)
    tiny_reasoner(t, head="flr", n_factors=2, init_std=0.1).save(tmp / "warm_flr", t)
    return tmp


def _args(world: Path, command: str, model: str, cfg: dict, out: Path, *extra: str) -> list[str]:
    return [
        command,
        "--data",
        str(world / "data"),
        "--model",
        str(world / model),
        "--domain",
        "musics",
        "--cfg",
        json.dumps(cfg),
        "--out",
        str(out),
        *extra,
    ]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard reads from the event files under `folder`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def _assert_curve_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000, path


def test_sft_steps_in_tensorboard_equal_the_train_log(world):
    out = world / "sft"
    main(_args(world, "sft", "model", SFT, out))
    log = json.loads((out / "train_log.json").read_text())
    steps = log["step_history"]
    assert [h["step"] for h in steps] == [1, 2, 3, 4] and log["steps"] == 4
    assert all(h["loss"] > 0 and h["grad_norm"] > 0 and h["tokens_per_second"] > 0 for h in steps)
    assert [(h["epoch"], h["step"]) for h in log["history"]] == [(0, 2), (1, 4)]
    events = _event_files(out / "tracking" / "sft")
    assert len(events) == 1, events
    got = scalars(out / "tracking" / "sft")
    assert set(got) == {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second", "valid/loss"}
    for key in ("loss", "lr", "grad_norm", "tokens_per_second"):
        assert got[f"train/{key}"] == [(h["step"], pytest.approx(h[key], rel=1e-6)) for h in steps], key
    assert got["valid/loss"] == [(h["step"], pytest.approx(h["valid_loss"], rel=1e-6)) for h in log["history"]]
    assert min(v for _, v in got["valid/loss"]) == pytest.approx(log["best_valid_loss"], rel=1e-6)
    _assert_curve_png(out / "training_curves.png")

    # Run again into the same folder (a rerun after a failure or a config change): the earlier attempt's curve
    # is replaced, not appended to, so TensorBoard shows one line per step.
    main(_args(world, "sft", "model", dict(SFT, max_steps=1), out))
    assert len(_event_files(out / "tracking")) == 1
    again = json.loads((out / "train_log.json").read_text())["step_history"]
    assert [s for s, _ in scalars(out / "tracking" / "sft")["train/loss"]] == [h["step"] for h in again] == [1]


def test_flr_grpo_steps_in_tensorboard_equal_the_rl_log(world):
    out = world / "flr_grpo"
    main(_args(world, "latent-rl", "warm_flr", FLR_GRPO, out))
    log = json.loads((out / "rl_log.json").read_text())
    hist = log["history"]
    assert [h["step"] for h in hist] == [1, 2, 3]
    keys = set(hist[0]) - {"step"}
    expected = {
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_second",
        "reward",
        "reward_clean",
        "advantage_sq_sum",
        "advantage_clean_sum",
        "exact_match",
        "exact_match_clean",
        "regularisers",
        "kl",
    }
    assert keys == expected, keys ^ expected
    assert all(h["kl"] >= 0 and 0 <= h["exact_match"] <= 1 for h in hist)
    got = scalars(out / "tracking" / "flr-grpo")
    assert set(got) == {f"train/{k}" for k in keys} | {"valid/neg_ppl"}
    for key in keys:
        assert got[f"train/{key}"] == [(h["step"], pytest.approx(h[key], rel=1e-6, abs=1e-7)) for h in hist], key
    assert got["valid/neg_ppl"] == [
        (0, pytest.approx(log["valid_neg_ppl_before"], rel=1e-6)),
        (3, pytest.approx(log["valid_neg_ppl"], rel=1e-6)),
    ]
    _assert_curve_png(out / "training_curves.png")
    assert not (out / "rl_rewards.png").exists()


def test_tracking_none_writes_no_tracker_files(world):
    out = world / "warm_none"
    recipe = {"head": "latentratt", "n_latents": 1, "sft": dict(SFT, max_steps=1, max_epochs=1)}
    main(_args(world, "latent-sft", "model", recipe, out, "--tracking", "none"))
    assert not (out / "tracking").exists() and not _event_files(out)
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["step_history"]) == 1  # the log holds the curve either way
    _assert_curve_png(out / "training_curves.png")


def test_a_tracker_whose_package_is_missing_is_refused_with_the_fix(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a)
    )
    for kind in ("wandb", "mlflow"):
        with pytest.raises(InputError, match=rf"needs the `{kind}` package.*pip install {kind}"):
            check_tracker(kind)
    check_tracker("tensorboard")
    check_tracker("none")
    with pytest.raises(InputError, match="must be one of tensorboard, wandb, mlflow, none"):
        check_tracker("comet")

    from latentrec.config_checks import validate_config

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["llm"]["tracking"] = "wandb"
    with pytest.raises(InputError, match=r"config: llm.tracking: 'wandb' needs the `wandb` package"):
        validate_config(cfg)

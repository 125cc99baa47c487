"""Several processes: `accelerate launch --num_processes 2 -m latentrec ...` on CPU (gloo), tiny models.

What a 2-GPU run of SFT, the LatentR3 warm-up, LR-GRPO and FLR-GRPO does is checked here against the
same command in one process: the same weights (to float tolerance), the batch advantage computed over
the samples of both processes, checkpoints that resume across process counts, outputs and log lines
written once, and decode shards that gather to the one-process ranking. docs/gpu_path.md says what
only a GPU can show.

Launching: `accelerate launch --cpu` starts ONE process whatever --num_processes says (its CPU path
needs mpirun); `--multi_gpu` with ACCELERATE_USE_CPU=1 starts torchrun workers that use gloo on the
CPU, the same launcher as a GPU run.

Tolerances: two processes sum each gradient in another order (each rank sums its micro-batches, then
the all-reduce adds the ranks), so weights agree to float rounding, not bit for bit. The weights move
by ~1e-3 in these runs; unsynchronised gradients, per-process advantages or per-process noise would
differ by that much, 100x the tolerance.
"""

import copy
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from latentrec.commands.main import main
from latentrec.data.processed_io import save_dataset
from latentrec.llm.backbone import tiny_llama_like
from tests.latent_toys import TITLES, catalog_dataset, tiny_reasoner

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed for multi-process CPU runs",
)

SFT = {
    "lr": 1e-3,
    "effective_batch": 6,
    "micro_batch": 2,
    "max_epochs": 1,
    "warmup_steps": 0,
    "checkpoint_every": 0,
    "valid_limit": 8,
    "train_sample": "first",
    "mixed_precision": "no",
}
# 3 micro-batches per step: one process runs 3, two run 2 + 1 (the uneven split); 32 rows = 5 steps.
RL = {
    "lr": 1e-2,
    "group_size": 4,
    "groups_per_step": 4,
    "max_steps": 2,
    "warmup_steps": 0,
    "train_limit": 8,
    "valid_limit": 4,
    "mixed_precision": "no",
}
# LR-GRPO: 8 samples per step in 2 baseline groups of 4 (2 per process), i.e. 2 micro-steps, the first
# under no_sync: both the gradient accumulation and the per-group gather across processes are exercised.
LR_GRPO = dict(RL, groups_per_step=8, advantage_groups=4, train_limit=16)
WEIGHT_TOL = 2e-5


# ------------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict:
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        ACCELERATE_USE_CPU="1",
        HF_HOME=str(tmp / "hf"),  # HF_HOME: no user accelerate config is read
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )


def launch(tmp: Path, args: list[str], processes: int = 2, script: Path | None = None) -> str:
    """Run `accelerate launch --num_processes N -m latentrec ARGS` (or a script); its stdout + stderr."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]
    cmd += [str(script)] if script else ["-m", "latentrec"]
    run = subprocess.run(cmd + args, env=_env(tmp), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, f"{' '.join(cmd + args)}\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run.stdout + run.stderr


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _assert_same_weights(a: Path, b: Path, start: Path | None = None) -> None:
    """Every tensor of safetensors file a equals b's to WEIGHT_TOL; and moved from start's by far more."""
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert diff <= WEIGHT_TOL, f"{a.parent.name} vs {b.parent.name}: max |diff| {diff:.3g}"
    if start is not None:
        w0 = load_file(str(start))
        moved = max(float((wa[k] - w0[k]).abs().max()) for k in wa)
        assert moved > 50 * WEIGHT_TOL, f"training barely moved the weights ({moved:.3g}): the test shows nothing"


def _once(text: str, needle: str) -> None:
    assert text.count(needle) == 1, f"{needle!r} appears {text.count(needle)} times:\n{text[-3000:]}"


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(smollm2_tokenizer, tmp_path_factory):
    """Data (32 users over 6 titles), a tiny backbone, and tiny LatentRATT and FLR warm-up models."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    n = 32
    histories = [[(u + k) % 6 for k in range(1 + u % 3)] for u in range(n)]
    ds = catalog_dataset(TITLES, histories, [(u + 3) % 6 for u in range(n)])
    for df in (ds.train, ds.valid, ds.test):  # the columns a saved dataset carries
        df["history_ratings"] = [[5.0] * len(h) for h in df["history_item_ids"]]
        df["history_timestamps"] = [list(range(len(h))) for h in df["history_item_ids"]]
        df["rating"], df["timestamp"] = 5.0, 100
    save_dataset(ds, tmp / "data")
    tok = smollm2_tokenizer
    tiny_llama_like(tok).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    # FLR: init_std 0.1, not 0.02: a fresh head's near-uniform attention makes its factors nearly parallel,
    # where the orthogonality/diversity gradients (through normalise, cos ~ 0.9995) cancel to 1e-4 relative
    # error, and Adam turns that into +-lr on a few elements whatever the process count.
    for head, opts in (("latentratt", {}), ("flr", {"n_factors": 2, "init_std": 0.1})):
        t = copy.deepcopy(tok)
        tiny_reasoner(t, head=head, **opts).save(tmp / f"warm_{head}", t)
    return tmp


def _sft_args(w: Path, out: Path, cfg: dict) -> list[str]:
    return [
        "sft",
        "--data",
        str(w / "data"),
        "--model",
        str(w / "model"),
        "--domain",
        "musics",
        "--cfg",
        json.dumps(cfg),
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def sft_one(world):
    """The one-process SFT every multi-process run is compared with."""
    main(_sft_args(world, world / "sft1", SFT))
    return world / "sft1"


# ----------------------------------------------------------------------------------------- tests
def test_sft_in_two_processes_ends_with_the_weights_of_one_and_writes_everything_once(world, sft_one):
    out = world / "sft2"
    text = launch(world, _sft_args(world, out, SFT))
    _assert_same_weights(
        sft_one / "model" / "model.safetensors",
        out / "model" / "model.safetensors",
        world / "model" / "model.safetensors",
    )
    one, two = (json.loads((d / "train_log.json").read_text()) for d in (sft_one, out))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["steps"] == one["steps"] == 5 and two["tokens"] == one["tokens"]  # every row trained once
    assert two["best_valid_loss"] == pytest.approx(one["best_valid_loss"], rel=1e-5)
    # Only the main process writes: the same files as one process, no temporary or partial ones left.
    assert _files(out) == _files(sft_one)
    for line in ("epoch 0: valid loss", "encode train: 100%", "sft: 100%", "Loading weights: 100%"):
        _once(text, line)


def test_latent_warmup_in_two_processes_ends_with_the_weights_of_one(world):
    recipe = {"head": "latentratt", "n_latents": 1, "sft": SFT}
    args = lambda out: [
        "latent-sft",
        "--data",
        str(world / "data"),
        "--model",
        str(world / "model"),  # noqa: E731
        "--domain",
        "musics",
        "--cfg",
        json.dumps(recipe),
        "--out",
        str(out),
    ]
    main(args(world / "warm1"))
    text = launch(world, args(world / "warm2"))
    for name in ("model.safetensors", "latent_head.safetensors"):
        _assert_same_weights(world / "warm1" / "model" / name, world / "warm2" / "model" / name)
    assert _files(world / "warm2") == _files(world / "warm1")
    _once(text, "epoch 0: valid loss")


def _rl(world: Path, warm: str, cfg: dict, tag: str):
    args = lambda out: [
        "latent-rl",
        "--data",
        str(world / "data"),
        "--model",
        str(world / warm),  # noqa: E731
        "--domain",
        "musics",
        "--cfg",
        json.dumps(cfg),
        "--out",
        str(out),
    ]
    main(args(world / f"{tag}1"))
    text = launch(world, args(world / f"{tag}2"))
    one, two = (json.loads((world / f"{tag}{n}" / "rl_log.json").read_text()) for n in (1, 2))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    _assert_same_weights(
        world / f"{tag}1" / "model" / "latent_head.safetensors",
        world / f"{tag}2" / "model" / "latent_head.safetensors",
        world / warm / "latent_head.safetensors",
    )
    assert _files(world / f"{tag}2") == _files(world / f"{tag}1")
    _once(text, "lr-grpo: 100%")
    # The per-step stats are over both processes' samples: the same as one process's.
    assert len(one["history"]) == len(two["history"]) == cfg["max_steps"]
    for h1, h2 in zip(one["history"], two["history"]):
        assert h1.keys() == h2.keys()
        for key in h1:
            assert h2[key] == pytest.approx(h1[key], rel=1e-4, abs=1e-6), key
    return one, two


def test_lr_grpo_batch_advantage_spans_both_processes_and_training_matches_one(world):
    one, two = _rl(world, "warm_latentratt", LR_GRPO, "lrgrpo")
    for h in two["history"]:
        # Each baseline group's 4 samples span both processes and share one baseline and normaliser:
        # ||A||^2 = 1 per group (2 per step) and the noise-free advantages sum to 0. Advantages computed
        # per process would give ||A||^2 = 1 per process and group, 4 per step.
        assert h["advantage_sq_sum"] == pytest.approx(2.0, abs=1e-4)
        assert h["advantage_clean_sum"] == pytest.approx(0.0, abs=1e-5)
        assert h["reward"] != h["reward_clean"]  # the noisy draws were scored: the advantage is not trivial


def test_flr_grpo_in_two_processes_matches_one(world):
    cfg = dict(RL, reward="hybrid", advantage="base", regularisers=True, beta=0.04)
    one, two = _rl(world, "warm_flr", cfg, "flrgrpo")
    for h in two["history"]:
        assert "exact_match" in h and "regularisers" in h
        assert h["advantage_clean_sum"] == 0.0  # FLR-GRPO's base advantage: the noise-free draw is the baseline


KILLER = textwrap.dedent("""
    # Run `python -m latentrec ARGS`, but die (os._exit, as kill -9) right after the first complete checkpoint.
    import os, sys
    import latentrec.llm.sft as sft
    real = sft.save_checkpoint
    def save_then_die(*a, **k):
        real(*a, **k)
        os._exit(0)
    sft.save_checkpoint = save_then_die
    from latentrec.commands.main import main
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("killed, resumed", [(2, 1), (1, 2)])
def test_sft_checkpoint_resumes_in_another_process_count(world, sft_one, capsys, killed, resumed):
    script = world / "kill_after_checkpoint.py"
    script.write_text(KILLER)
    out = world / f"resume_{killed}to{resumed}"
    cfg = dict(SFT, checkpoint_every=2)  # dies after step 2 of 5; the cadence does not change the trajectory
    if killed == 2:
        launch(world, _sft_args(world, out, cfg), script=script)
    else:
        run = subprocess.run(
            [sys.executable, str(script), *_sft_args(world, out, cfg)],
            env=_env(world),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2 and not (out / "model").exists()
    assert sorted(p.name for p in (out / "checkpoint").glob("rng_state_*")) == [
        f"rng_state_{r}.json" for r in range(killed)
    ]
    if resumed == 1:
        main(_sft_args(world, out, cfg))
        text = capsys.readouterr().out
    else:
        text = launch(world, _sft_args(world, out, cfg))
    _once(text, f"resumed from {out / 'checkpoint'}: epoch 0, step 2")
    _assert_same_weights(sft_one / "model" / "model.safetensors", out / "model" / "model.safetensors")
    assert json.loads((out / "train_log.json").read_text())["steps"] == 5
    assert not (out / "checkpoint").exists()  # a finished run keeps no checkpoint (keep_checkpoint false)


def test_decode_shards_gather_to_the_ranked_lists_of_one_shard(world):
    dec = lambda shard, n, out: main(
        [  # noqa: E731
            "decode",
            "--data",
            str(world / "data"),
            "--model",
            str(world / "warm_latentratt"),
            "--domain",
            "musics",
            "--cfg",
            '{"num_beams": 3, "num_return": 3, "batch_size": 4}',
            "--test-limit",
            "9",
            "--shard",
            str(shard),
            "--num-shards",
            str(n),
            "--out",
            str(out),
        ]
    )
    gather = lambda shards, out: main(
        [
            "gather",
            "--shards",
            *map(str, shards),
            "--dataset",
            "toy",  # noqa: E731
            "--method",
            "m",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    dec(0, 1, world / "one.parquet")
    # rows 0-4 and 5-8: batches of 4 cut the rows differently than one shard does (other padding)
    dec(0, 2, world / "s0.parquet")
    dec(1, 2, world / "s1.parquet")
    gather([world / "one.parquet"], world / "run1")
    gather([world / "s1.parquet", world / "s0.parquet"], world / "run2")  # any order: gather sorts by row
    a, b = (pd.read_parquet(world / r / "predictions.parquet") for r in ("run1", "run2"))
    assert a["row"].tolist() == b["row"].tolist() == list(range(9))
    assert a["pred_item_ids"].map(list).tolist() == b["pred_item_ids"].map(list).tolist()
    for x, y in zip(a["pred_scores"], b["pred_scores"]):
        assert list(y) == pytest.approx(list(x), abs=1e-4)

"""RecBole's sequential models (SASRec, GRU4Rec) on our processed split, beside our own runs.

SASRec with loss CE checks our SASRec (CE) (issue 6); GRU4Rec with loss BPR and one uniformly sampled
negative is the closest RecBole has to the papers' protocol (BCE against one sampled negative), a
reference point for our GRU4Rec (issue 3). RecBole's Caser is left out: it learns a per-user
embedding, and here every sample row is its own "user", so test rows would meet untrained users.

Runs in its own environment, never in the package's (recbole is not a dependency of latentrec). The
pins are the ones docs/results.md found necessary (pandas 3 breaks RecBole's id remapping; pyarrow >= 18
needs numpy 2):

    python3 -m venv /work/recbole-venv
    /work/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" pandas==2.2.3 pyarrow==17.0.0
    OMP_NUM_THREADS=1 /work/recbole-venv/bin/python bench/recbole_baseline.py --model SASRec --loss CE \
        --data results/CDs_and_Vinyl/data --out results/CDs_and_Vinyl/_recbole/SASRec-CE --seeds 0 1 2

Our samples enter RecBole unchanged. Each split becomes a benchmark atomic file
(`{name}.{split}.inter`) with one line per sample row: a row id (RecBole's user field), the history
(`item_id_list`, at most 10 items, oldest first) and the target. With `benchmark_filename` set and
the list field given, RecBole skips its own prefix augmentation and splitting, so it trains on our
49,251 train rows, early-stops on our valid rows and tests on our test rows. Every catalog item
occurs in some history or target, so RecBole ranks the same 5,841 items (its id 0 is padding and is
never ranked). Evaluation is full ranking over all items, without history masking (RecBole does not
mask histories for sequential models), as ours.

Per seed the script writes `seed{n}/predictions.parquet` in our predictions format (top-10 item ids
of our catalog per test row, in test-row order), so `python -m latentrec evaluate` scores it with the
same code and paired t-tests can pair it with our runs; and `seed{n}/recbole.json` with RecBole's own
valid/test metrics, the settings and the wall/CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import _setup  # the load average recorded with every figure (bench/ is on sys.path when run as a script)


@contextlib.contextmanager
def unpickling_allowed_for(path: Path, written_after: float):
    """Let torch.load unpickle (weights_only=False) during one call that loads `path`, the file this
    process wrote after `written_after` (time.time()); the environment is restored afterwards.

    RecBole 1.2.1 reloads its own best checkpoint with torch.load's default, which torch >= 2.6 made
    weights_only=True; the checkpoint holds its config object, so that load fails. Only that one load,
    of a file this run just wrote, is allowed to unpickle; nothing else in the process is.
    """
    if not path.is_file() or path.stat().st_mtime < written_after:
        raise RuntimeError(f"{path}: not the checkpoint this run wrote; refusing to unpickle it")
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


SPLITS = ("train", "valid", "test")
TOPK = 10

# RecBole's model defaults (properties/model/{SASRec,GRU4Rec}.yaml), written out so the record says
# what ran; the loss comes from --loss. Overall settings follow RecBole's defaults except where noted.
MODEL_SETTINGS = {
    "SASRec": {
        "n_layers": 2,
        "n_heads": 2,
        "hidden_size": 64,
        "inner_size": 256,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
    },
    "GRU4Rec": {"embedding_size": 64, "hidden_size": 128, "num_layers": 1, "dropout_prob": 0.3},
}
SETTINGS = {
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    # RecBole's default batch is 2048: 24 updates per CDs epoch, so at lr 1e-3 it needs several
    # times our epoch count; this CPU could not afford that. 256 is our batch (193 updates/epoch).
    "train_batch_size": 256,
    "eval_batch_size": 4096,
    "epochs": 40,  # RecBole default 300; ours stops by 30
    "stopping_step": 5,  # RecBole default 10; our patience is 5
    "valid_metric": "NDCG@10",  # RecBole default MRR@10; ours selects on NDCG@10
    "MAX_ITEM_LIST_LENGTH": 10,
}


def write_atomic(data: Path, work: Path, name: str) -> dict[str, int]:
    """Write {name}.{split}.inter files from our Parquet split; returns rows per split."""
    work.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split in SPLITS:
        df = pd.read_parquet(data / f"{split}.parquet", columns=["history_item_ids", "item_id"])
        lines = ["session_id:token\titem_id_list:token_seq\titem_id:token"]
        for r, (hist, target) in enumerate(zip(df["history_item_ids"], df["item_id"])):
            if not 1 <= len(hist) <= SETTINGS["MAX_ITEM_LIST_LENGTH"]:
                raise ValueError(f"{split} row {r}: history length {len(hist)}")
            lines.append(f"{split}{r}\t{' '.join(str(int(i)) for i in hist)}\t{int(target)}")
        (work / f"{name}.{split}.inter").write_text("\n".join(lines) + "\n")
        sizes[split] = len(df)
    return sizes


def run_settings(model: str, loss: str) -> dict:
    """Everything that shapes the model and its training: written into every record."""
    # BPR needs negatives: one uniformly sampled item per positive, as the papers' BCE protocol.
    neg = {"distribution": "uniform", "sample_num": 1} if loss == "BPR" else None
    return {**SETTINGS, **MODEL_SETTINGS[model], "loss_type": loss, "train_neg_sample_args": neg}


def recbole_config(work: Path, name: str, seed: int, out: Path, settings: dict) -> dict:
    return {
        **settings,
        "data_path": str(work.parent),
        "benchmark_filename": list(SPLITS),
        "USER_ID_FIELD": "session_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["session_id", "item_id_list", "item_id"]},
        "eval_args": {
            "split": {"RS": [0.8, 0.1, 0.1]},
            "order": "TO",
            "group_by": "user",
            "mode": {"valid": "full", "test": "full"},
        },
        "metrics": ["Hit", "NDCG"],
        "topk": [5, 10],
        "seed": seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "worker": 0,
        "show_progress": False,
        "checkpoint_dir": str(out / "checkpoint"),
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
    }


@torch.no_grad()
def test_predictions(model, test_data, dataset, titles: list[str]) -> pd.DataFrame:
    """Top-10 of our item ids per test row, in our test-row order."""
    model.eval()
    uid, iid = dataset.uid_field, dataset.iid_field
    rows, ids, scores = [], [], []
    for batch in test_data:
        interaction = batch[0]
        s = model.full_sort_predict(interaction).view(len(interaction), -1)
        s[:, 0] = -torch.inf  # RecBole's padding item
        top = torch.topk(s, TOPK, dim=1)
        tokens = dataset.id2token(iid, top.indices.numpy())
        ids.append(tokens.astype(np.int64))
        scores.append(top.values.numpy())
        rows.extend(int(t[len("test") :]) for t in dataset.id2token(uid, interaction[uid].numpy()))
    ids, scores = np.concatenate(ids), np.concatenate(scores)
    order = np.argsort(rows)
    if not (np.asarray(rows)[order] == np.arange(len(rows))).all():
        raise RuntimeError("RecBole's test rows do not cover our test rows one to one")
    ids, scores = ids[order], scores[order]
    return pd.DataFrame(
        {
            "row": np.arange(len(ids), dtype=np.int64),
            "pred_item_ids": list(ids),
            "pred_titles": [[titles[i] for i in r] for r in ids],
            "pred_scores": list(scores.astype(np.float32)),
        }
    )


def run_seed(args, seed: int, sizes: dict) -> dict:
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model import sequential_recommender
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    out = args.out / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    load = _setup.LoadAverage()
    t0, c0 = time.perf_counter(), time.process_time()
    settings = run_settings(args.model, args.loss)
    model_class = getattr(sequential_recommender, args.model)
    config = Config(
        model=model_class, dataset=args.name, config_dict=recbole_config(args.work, args.name, seed, out, settings)
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    n_items_ranked = dataset.item_num - 1  # minus padding
    if n_items_ranked != args.n_items:
        raise RuntimeError(f"RecBole ranks {n_items_ranked} items, our catalog has {args.n_items}")
    for split, d in zip(SPLITS, (train_data, valid_data, test_data)):
        if len(d.dataset) != sizes[split]:
            raise RuntimeError(f"RecBole {split}: {len(d.dataset)} rows, ours {sizes[split]}")
    model = model_class(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    fit_start = time.time()
    best_valid, valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    with unpickling_allowed_for(Path(trainer.saved_model_file), fit_start):
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    t_fit = time.perf_counter() - t0
    titles = pd.read_parquet(args.data / "items.parquet")["title"].tolist()
    test_users = pd.read_parquet(args.data / "test.parquet", columns=["user_id"])["user_id"]
    pred = test_predictions(trainer.model, test_data, dataset, titles)
    pred.insert(1, "user_id", test_users.to_numpy())
    pred.to_parquet(out / "predictions.parquet", index=False)
    record = {
        "seed": seed,
        "recbole_valid": {k: float(v) for k, v in valid_result.items()},
        "recbole_test": {k: float(v) for k, v in test_result.items()},
        "best_valid_ndcg@10": float(best_valid),
        # RecBole's Trainer keeps one loss per epoch run and, in cur_step, the epochs since the best
        # validation (we validate every epoch), so the best epoch (1-based) is their difference.
        "epochs_run": len(trainer.train_loss_dict),
        "best_epoch": len(trainer.train_loss_dict) - int(trainer.cur_step),
        "wall_seconds": time.perf_counter() - t0,
        "fit_wall_seconds": t_fit,
        "cpu_seconds": time.process_time() - c0,
        "threads": args.threads,
        "settings": settings,
        "rows": sizes,
        "n_items_ranked": n_items_ranked,
        "versions": versions(),
        **load.fields(),
    }
    (out / "recbole.json").write_text(json.dumps(record, indent=2) + "\n")
    # What `latentrec evaluate` reads beside predictions.parquet (JSON is valid YAML).
    run_cfg = {
        "dataset": args.data.parent.name,
        "method": f"RecBole-{args.model}-{args.loss}",
        "seed": seed,
        "split": "test",
        "settings": settings,
        "versions": record["versions"],
    }
    (out / "config.yaml").write_text(json.dumps(run_cfg, indent=2) + "\n")
    return record


def versions() -> dict:
    import recbole

    return {
        "python": platform.python_version(),
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="our processed dataset folder (Parquet)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", choices=sorted(MODEL_SETTINGS), default="SASRec")
    ap.add_argument("--loss", choices=["CE", "BPR"], default="CE")
    ap.add_argument("--work", type=Path, default=None, help="where the atomic files go (default: OUT/atomic/NAME)")
    ap.add_argument("--name", default="latentrec_split")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None, help="override SETTINGS['epochs'] (smoke tests)")
    args = ap.parse_args()
    if args.epochs is not None:
        SETTINGS["epochs"] = args.epochs
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.work = (args.work.resolve() if args.work else args.out / "atomic") / args.name
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # RecBole writes ./log and ./log_tensorboard into the working directory
    args.n_items = len(pd.read_parquet(args.data / "items.parquet", columns=["item_id"]))
    sizes = write_atomic(args.data, args.work, args.name)
    for seed in args.seeds:
        rec = run_seed(args, seed, sizes)
        print(
            json.dumps({"seed": seed, "test": rec["recbole_test"], "wall_seconds": round(rec["wall_seconds"], 1)}),
            flush=True,
        )


if __name__ == "__main__":
    main()

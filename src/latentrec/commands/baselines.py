"""Traditional recommenders: train and rank (fit-predict), AlphaRec's title embeddings, and the choice of a grid
point on validation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from latentrec.commands.args import DATA_HELP, THREADS_HELP, cfg_help, json_arg

log = logging.getLogger("latentrec")


def cmd_fit_predict(a) -> None:
    from latentrec.baselines.registry import build
    from latentrec.data.processed_io import load_dataset
    from latentrec.runs import predictions_frame, seed_everything, write_predictions, write_run_metadata

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)  # small models: one thread per job is fastest on a shared CPU
    seed_everything(a.seed)
    ds = load_dataset(a.data)
    method = a.cfg
    params = dict(method.get("params", {}))
    if a.item_embeddings:  # precomputed inputs (AlphaRec's title embeddings), produced by their own rule
        params["item_embeddings"] = a.item_embeddings
    model = build(method["family"], params, seed=a.seed)
    t0 = time.time()
    train_log = model.fit(ds) or {}
    train_log["fit_seconds"] = time.time() - t0
    out = Path(a.out)
    # Valid predictions feed model selection over a grid; test predictions are what gets reported.
    for split, name in (("valid", "predictions_valid.parquet"), ("test", "predictions.parquet")):
        t1 = time.time()
        ids, scores = model.recommend(ds.split(split), k=a.k)
        train_log[f"predict_seconds_{split}"] = time.time() - t1
        write_predictions(predictions_frame(ds.split(split), ids, scores, ds.titles), out / name)
    write_run_metadata(
        out,
        {"dataset": a.dataset, "method": a.method, "seed": a.seed, "split": "test", "method_config": method},
        train_log,
    )


def cmd_item_embeddings(a) -> None:
    """AlphaRec's input: the backbone's mean-pooled last hidden state of every item title (.npy)."""
    import numpy as np
    import torch

    from latentrec.baselines.alpharec import title_embeddings
    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import atomic_path, write_json
    from latentrec.llm.backbone import load_backbone

    if a.threads:
        torch.set_num_threads(a.threads)
    ds = load_dataset(a.data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, tok = load_backbone(a.model, dtype=dtype, device=device)
    t0 = time.time()
    emb = title_embeddings(model, tok, ds.titles, batch_size=a.batch_size)
    seconds = time.time() - t0
    with atomic_path(a.out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, emb)
    write_json(
        {
            "model": str(a.model),
            "n_items": int(emb.shape[0]),
            "dim": int(emb.shape[1]),
            "pooling": "mean",
            "layer": "last",
            "device": device,
            "dtype": str(dtype),
            "seconds": seconds,
        },
        Path(a.out).with_suffix(".json"),
    )
    log.info("title embeddings %s of %s in %.1fs", list(emb.shape), a.model, seconds)


def cmd_select_grid(a) -> None:
    """Pick the grid point with the best validation metric and install its test run as the method's run."""
    import shutil

    from latentrec.data.processed_io import load_dataset
    from latentrec.eval.selection import choose_grid_point
    from latentrec.report.tables import write_csv

    table, best = choose_grid_point(a.points, load_dataset(a.data), a.metric)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table.drop(columns="path"), out / "grid_selection.csv")
    for name in ("config.yaml", "train_log.json", "predictions_valid.parquet", "predictions.parquet"):
        shutil.copyfile(Path(best["path"]) / name, out / f".{name}.tmp")
        Path(out / f".{name}.tmp").replace(out / name)  # predictions.parquet last: the rule's main output
    log.info("selected %s (valid %s=%.4f)", best["point"], a.metric, best[a.metric])


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "fit-predict",
        help="train a recommender and write its ranked lists",
        description="Train a score-based recommender (MostPop, Caser, GRU4Rec, SASRec, AlphaRec, ...) on the "
        "train split and write its top-K ranked lists for every valid and test row.",
    )
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--dataset", required=True, help="dataset name, recorded in the run's config.yaml")
    s.add_argument("--method", required=True, help="method name, recorded in the run's config.yaml")
    s.add_argument(
        "--cfg",
        type=json_arg,
        required=True,
        help=cfg_help(
            "method config: a methods.<name> block of config.yaml (family, params; for a "
            "grid point, params are that point's)",
            '{"family": "sasrec", "params": {"max_epochs": 30}}',
        ),
    )
    s.add_argument(
        "--seed", type=int, default=0, help="random seed of initialisation and training (default %(default)s)"
    )
    s.add_argument("--k", type=int, default=10, help="length of each ranked list (top K items) (default %(default)s)")
    s.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    s.add_argument(
        "--item-embeddings",
        default=None,
        help="item title embeddings (.npy, from `item-embeddings`) for families that take one "
        "(AlphaRec); passed as params.item_embeddings",
    )
    s.add_argument(
        "--out",
        required=True,
        help="run folder to write: predictions.parquet (test), predictions_valid.parquet, config.yaml, train_log.json",
    )
    s.set_defaults(func=cmd_fit_predict)

    s = sub.add_parser(
        "item-embeddings",
        help="LLM title embeddings of a dataset's items (AlphaRec's input)",
        description=cmd_item_embeddings.__doc__,
    )
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument(
        "--model",
        required=True,
        help="backbone folder (Hugging Face format, as written by `fetch-model`, e.g. resources/models/<name>)",
    )
    s.add_argument("--batch-size", type=int, default=64, help="titles per forward pass (default %(default)s)")
    s.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    s.add_argument(
        "--out", required=True, help="file to write: .npy float32 [n_items, hidden]; a .json with provenance beside"
    )
    s.set_defaults(func=cmd_item_embeddings)

    s = sub.add_parser(
        "select-grid",
        help="choose a grid point on validation and install its test run",
        description="Score every grid point's predictions_valid.parquet on the valid split, pick the best "
        "(first on ties) and copy its run files into --out.",
    )
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument(
        "--points",
        nargs="+",
        required=True,
        help="grid point run folders (each written by `fit-predict`), in the grid's order",
    )
    s.add_argument(
        "--metric", default="NDCG@10", help="validation metric to maximise: HR@10 or NDCG@10 (default %(default)s)"
    )
    s.add_argument(
        "--out",
        required=True,
        help="method run folder to write: grid_selection.csv and the chosen point's config.yaml, "
        "train_log.json, predictions_valid.parquet, predictions.parquet",
    )
    s.set_defaults(func=cmd_select_grid)

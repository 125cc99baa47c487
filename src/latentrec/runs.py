"""A run's outputs in results/{dataset}/{method}/seed{n}/ and the code that writes them.

predictions.parquet   row, user_id, pred_item_ids (top-k), pred_titles, pred_scores
config.yaml           the resolved method config, seed, dataset and package version
train_log.json        what fit() reported (losses, epochs, timings)
rows.parquet          per-row metrics (written by `evaluate`, used by the paired tests)
metrics.json          aggregate metrics
"""

from __future__ import annotations

import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import latentrec
from latentrec.io_utils import atomic_path, write_json, write_yaml

PREDICTION_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("user_id", pa.string()),
        ("pred_item_ids", pa.list_(pa.int64())),
        ("pred_titles", pa.list_(pa.string())),
        ("pred_scores", pa.list_(pa.float64())),
    ]
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predictions_frame(test: pd.DataFrame, ids: np.ndarray, scores: np.ndarray, titles: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": np.arange(len(test)),
            "user_id": test["user_id"].to_numpy(),
            "pred_item_ids": [list(map(int, r)) for r in ids],
            "pred_titles": [[titles[i] for i in r] for r in ids],
            "pred_scores": [list(map(float, r)) for r in scores],
        }
    )


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    table = pa.Table.from_pandas(df[PREDICTION_SCHEMA.names], schema=PREDICTION_SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_run_metadata(out_dir: str | os.PathLike, config: dict, train_log: dict) -> None:
    out_dir = Path(out_dir)
    resolved = dict(config)
    resolved["environment"] = {
        "latentrec": latentrec.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_yaml(resolved, out_dir / "config.yaml")
    write_json(train_log, out_dir / "train_log.json")


def peak_memory_mb(device=None) -> float:
    """Peak memory of this process so far: allocated GPU memory on a CUDA device, else the peak RSS."""
    import resource

    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

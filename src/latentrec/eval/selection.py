"""Choosing a grid point of a score-based recommender: the best HR@10 or NDCG@10 of its ranked lists on the valid
split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from latentrec.eval.metrics import aggregate, evaluate_predictions
from latentrec.io_utils import read_parquet


def choose_grid_point(points: list[str], ds, metric: str) -> tuple[pd.DataFrame, pd.Series]:
    """(one row per grid point run folder: point, path, HR@10, NDCG@10, selected; the chosen row). Each point's
    predictions_valid.parquet is scored on `ds`'s valid split; the best `metric` wins, the first listed on ties."""
    scores = []
    for point in points:
        preds = read_parquet(Path(point) / "predictions_valid.parquet")
        m = aggregate(evaluate_predictions(preds, ds.valid, ds.titles))
        scores.append({"point": Path(point).name, "path": point, **{k: m[k] for k in ("HR@10", "NDCG@10")}})
    table = pd.DataFrame(scores)
    best = table.loc[table[metric].idxmax()]  # first best on ties: the grid's listed order
    table["selected"] = table["point"] == best["point"]
    return table, best

"""HR@K and NDCG@K from ranked top-k lists, per test row and aggregated.

Two matching rules are reported side by side (REFERENCE.md §6.3-6.4):
  id     the prediction is the target item itself (our primary metric);
  title  the prediction's title string equals the target's title, as the reference scripts do, so any
         item sharing the target's title (e.g. 54 "Greatest Hits" in CDs) counts as a hit. The
         reference takes the LAST matching position among the returned list; we follow it.
NDCG uses a single relevant item: 1/log2(i+2) for 0-based position i, 0 on a miss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KS = (1, 3, 5, 10)
MISS = -1


def hit_positions_by_id(pred_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of the target in each row's ranked ids, MISS where absent (first match)."""
    pred_ids = np.asarray(pred_ids)
    eq = pred_ids == np.asarray(targets)[:, None]
    pos = np.where(eq.any(axis=1), eq.argmax(axis=1), MISS)
    return pos.astype(np.int64)


def _norm_pred(title: str) -> str:
    return title.strip(" \n").strip('"').strip(" ")


def _norm_target(title: str) -> str:
    return title.strip(' \n"')


def hit_positions_by_title(pred_titles, target_titles) -> np.ndarray:
    """Position of the LAST prediction whose normalised title equals the target's (reference calc.py)."""
    out = np.full(len(target_titles), MISS, dtype=np.int64)
    for r, (preds, target) in enumerate(zip(pred_titles, target_titles)):
        t = _norm_target(target)
        for i, p in enumerate(preds):
            if _norm_pred(p) == t:
                out[r] = i
    return out


def row_metrics(positions: np.ndarray, ks=KS, prefix: str = "") -> pd.DataFrame:
    positions = np.asarray(positions)
    hit = positions != MISS
    gain = np.where(hit, 1.0 / np.log2(np.where(hit, positions, 0) + 2.0), 0.0)
    cols = {}
    for k in ks:
        within = hit & (positions < k)
        cols[f"{prefix}HR@{k}"] = within.astype(np.float64)
        cols[f"{prefix}NDCG@{k}"] = np.where(within, gain, 0.0)
    return pd.DataFrame(cols)


def evaluate_predictions(predictions: pd.DataFrame, test: pd.DataFrame, titles: list[str]) -> pd.DataFrame:
    """Per-row metrics by id and by title. `predictions` rows align with `test` rows (column `row`)."""
    if len(predictions) != len(test):
        raise ValueError(f"{len(predictions)} prediction rows for {len(test)} test rows")
    if not (predictions["row"].to_numpy() == np.arange(len(test))).all():
        raise ValueError("prediction rows must be 0..n-1 in test order")
    targets = test["item_id"].to_numpy()
    pred_ids = np.stack(predictions["pred_item_ids"].map(np.asarray).to_list())
    pos_id = hit_positions_by_id(pred_ids, targets)
    target_titles = [titles[t] for t in targets]
    pos_title = hit_positions_by_title(predictions["pred_titles"].to_list(), target_titles)
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "row": np.arange(len(test)),
                    "user_id": test["user_id"].to_numpy(),
                    "pos_id": pos_id,
                    "pos_title": pos_title,
                }
            ),
            row_metrics(pos_id),
            row_metrics(pos_title, prefix="title_"),
        ],
        axis=1,
    )
    return rows


def aggregate(rows: pd.DataFrame) -> dict[str, float]:
    metric_cols = [c for c in rows.columns if "@" in c]
    out = {c: float(rows[c].mean()) for c in metric_cols}
    out["n_rows"] = int(len(rows))
    return out

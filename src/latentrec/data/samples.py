"""Sliding-window samples and the global temporal 8:1:1 split (docs/reference_code.md §1.5-1.6)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentrec.data.processed_io import SAMPLE_COLUMNS


def sliding_window_samples(
    user: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray, rating: np.ndarray, history_len: int = 10
) -> pd.DataFrame:
    """One sample per interaction except each user's first: the previous ≤ history_len items → this item.

    Inputs are the kept reviews in file order. Users are visited in order of their first review, each
    user's interactions stably sorted by timestamp (ties keep file order), as the reference does.
    """
    df = pd.DataFrame({"user": user, "item": item_id, "ts": timestamp, "rating": rating})
    df["user_rank"] = pd.factorize(df["user"])[0]  # order of first appearance
    df = df.sort_values(["user_rank", "ts"], kind="stable")
    rows = []
    for user_id, g in df.groupby("user_rank", sort=True):
        items, stamps, rates = g["item"].tolist(), g["ts"].tolist(), g["rating"].tolist()
        uid = g["user"].iat[0]
        for i in range(1, len(items)):
            lo = max(0, i - history_len)
            rows.append((uid, items[lo:i], items[i], rates[lo:i], rates[i], stamps[lo:i], stamps[i]))
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)


def temporal_split(samples: pd.DataFrame, ratios=(0.8, 0.1, 0.1)) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Global stable sort by target time, then cut by row index at int(r1·N) and int((r1+r2)·N)."""
    if abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"split ratios must sum to 1, got {ratios}")
    ordered = samples.sort_values("timestamp", kind="stable").reset_index(drop=True)
    n = len(ordered)
    # round() keeps 0.8 + 0.1 from becoming 0.9000000000000001 and shifting a boundary row.
    a, b = int(n * ratios[0]), int(n * round(ratios[0] + ratios[1], 12))
    return (
        ordered.iloc[:a].reset_index(drop=True),
        ordered.iloc[a:b].reset_index(drop=True),
        ordered.iloc[b:].reset_index(drop=True),
    )

"""Dataset statistics in the layout of LatentR3 Table 3 (train / valid / test rows, items)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentrec.data.processed_io import SPLITS, ProcessedDataset


def dataset_stats(ds: ProcessedDataset) -> dict:
    out = {f"n_{s}": len(ds.split(s)) for s in SPLITS}
    out["n_items"] = ds.n_items
    every = pd.concat([ds.split(s) for s in SPLITS])
    out["n_users"] = int(every["user_id"].nunique())
    out["mean_history_len"] = float(every["history_item_ids"].map(len).mean())
    counts = np.bincount(ds.train["item_id"].to_numpy(), minlength=ds.n_items)
    out["train_items_never_target"] = int((counts == 0).sum())
    out["n_distinct_titles"] = int(ds.items["title"].nunique())
    # Targets whose title is shared with another item: title matching (docs/reference_code.md §6.4) is lenient there.
    shared = ds.items["title"].duplicated(keep=False).to_numpy()
    out["test_targets_with_shared_title"] = int(shared[ds.test["item_id"].to_numpy()].sum())
    ts = ds.test["timestamp"].dropna()
    if len(ts):
        out["test_time_range"] = [
            str(pd.Timestamp(int(ts.min()), unit="s").date()),
            str(pd.Timestamp(int(ts.max()), unit="s").date()),
        ]
    return out

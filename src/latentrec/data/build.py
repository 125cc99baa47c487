"""Raw Amazon files → processed dataset: titles, window/k-core, ids, samples, split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentrec.data.amazon import read_meta_titles, read_reviews
from latentrec.data.filtering import (
    FilterConfig,
    assign_item_ids,
    kcore_with_backoff,
    make_titles_unique,
    select_titles,
)
from latentrec.data.processed_io import ProcessedDataset
from latentrec.data.samples import sliding_window_samples, temporal_split
from latentrec.errors import InputError


def build_from_raw(reviews_path, meta_path, processing: dict) -> tuple[ProcessedDataset, dict]:
    """Returns the dataset and a provenance dict (chosen window, passes, counts)."""
    cfg = FilterConfig.from_dict(processing)
    history_len = int(processing.get("history_len", 10))
    ratios = tuple(processing.get("split_ratios", (0.8, 0.1, 0.1)))

    meta = read_meta_titles(meta_path)
    if not meta:
        raise InputError(f"{meta_path}: no meta records in the file")
    titles, removed = select_titles(meta, cfg)
    if not titles:
        untitled = sum(1 for _, t in meta if t is None)
        raise InputError(
            f"{meta_path}: none of its {len(meta)} meta records has a usable title ({untitled} without "
            f"a title, {len(meta) - untitled} empty or dropped by the title filter: 1 character or less, "
            f"over {cfg.max_title_words} words, or markup); check that this is the category's meta file"
        )
    reviews = read_reviews(reviews_path)
    if len(reviews) == 0:
        raise InputError(f"{reviews_path}: no reviews in the file")
    reviewed = set(reviews.asin)
    if (titles.keys() - removed).isdisjoint(reviewed):
        raise InputError(
            f"{reviews_path}: none of its {len(reviewed)} reviewed items has a usable title in "
            f"{meta_path} ({len(titles)} titled items there); check that reviews and meta belong to the "
            "same category"
        )

    result = kcore_with_backoff(reviews, set(titles), removed, cfg)
    if not result.item_order:
        raise InputError(
            f"{reviews_path}: no item survives the {cfg.k_core}-core inside the window "
            f"{result.window[0]}..{result.window[1]} (titles from {meta_path}); widen the window "
            "(processing.window_start), lower processing.k_core, or check that reviews and meta "
            "belong to the same category"
        )
    ids = assign_item_ids(result.item_order, cfg.item_id_seed)
    by_id = sorted(ids, key=ids.get)
    if cfg.title_cleaning == "strict":
        titles = make_titles_unique(titles, by_id)
    items = pd.DataFrame({"item_id": np.arange(len(by_id)), "asin": by_id, "title": [titles[a] for a in by_id]})

    keep = result.mask
    item_id = np.array([ids[a] for a in reviews.asin[keep]], dtype=np.int64)
    samples = sliding_window_samples(
        reviews.user[keep], item_id, reviews.timestamp[keep], reviews.rating[keep], history_len
    )
    train, valid, test = temporal_split(samples, ratios)
    ds = ProcessedDataset(items=items, train=train, valid=valid, test=test)
    ds.validate(str(reviews_path))
    provenance = {
        "window": {"start": result.window[0], "end": result.window[1]},
        "name": f"{{category}}_{cfg.k_core}_{result.window[0]}-{result.window[1]}",
        "attempts": result.passes,
        "n_reviews_raw": int(len(reviews)),
        "n_reviews_kept": int(keep.sum()),
        "n_users": int(pd.unique(reviews.user[keep]).size),
        "n_items": len(items),
        "n_samples": len(samples),
    }
    return ds, provenance

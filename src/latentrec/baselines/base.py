"""One fit/predict interface for every recommender (MostPop, Caser, GRU4Rec, SASRec, AlphaRec, LLMs).

A recommender is built from its method config (`family` plus hyperparameters) and a seed, fitted on a
ProcessedDataset, and asked for the top-k items of sample rows. Score-based models implement
`score_batch`; `recommend` turns scores into ranked lists in batches so that full ranking over all
items stays vectorised and memory-bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import pandas as pd
import torch

from latentrec.data.processed_io import ProcessedDataset
from latentrec.io_utils import progress

_REGISTRY: dict[str, type["Recommender"]] = {}


def register(family: str) -> Callable[[type["Recommender"]], type["Recommender"]]:
    def deco(cls):
        if family in _REGISTRY:
            raise ValueError(f"recommender family {family!r} registered twice")
        cls.family = family
        _REGISTRY[family] = cls
        return cls

    return deco


def families() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def build(family: str, params: dict | None = None, seed: int = 0) -> "Recommender":
    _import_all()
    if family not in _REGISTRY:
        raise KeyError(f"unknown recommender family {family!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[family](params=dict(params or {}), seed=seed)


def _import_all() -> None:
    # Importing the modules registers their classes.
    import latentrec.baselines.alpharec  # noqa: F401
    import latentrec.baselines.mostpop  # noqa: F401

    try:  # sequential models arrive with the baselines issue
        import latentrec.baselines.sequential  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name != "latentrec.baselines.sequential":
            raise


class Recommender(ABC):
    family: str = ""

    def __init__(self, params: dict, seed: int = 0):
        self.params = params
        self.seed = seed

    @abstractmethod
    def fit(self, data: ProcessedDataset) -> dict:
        """Train on data.train (validation allowed for early stopping). Returns a training log."""

    @abstractmethod
    def score_batch(self, samples: pd.DataFrame) -> torch.Tensor:
        """Scores [len(samples), n_items] for the next item of each sample row (higher is better)."""

    def recommend(self, samples: pd.DataFrame, k: int = 10, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids and scores per row, ranked best first, ties broken by lower item id."""
        ids, scores = [], []
        for start in progress(range(0, len(samples), batch_size), desc=f"{self.family}: rank", unit="batch"):
            s = self.score_batch(samples.iloc[start : start + batch_size]).float()
            top = topk_stable(s, k)
            ids.append(top.indices.cpu().numpy())
            scores.append(top.values.cpu().numpy())
        return np.concatenate(ids), np.concatenate(scores)


def topk_stable(scores: torch.Tensor, k: int):
    """torch.topk with a deterministic tie rule: equal scores rank by ascending item id.

    torch.topk's order among ties is unspecified; a stable descending sort fixes it.
    """
    k = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    return torch.return_types.topk((order.values[:, :k], order.indices[:, :k]))

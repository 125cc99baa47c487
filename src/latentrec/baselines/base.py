"""One fit/predict interface for every recommender (MostPop, Caser, GRU4Rec, SASRec, AlphaRec, LLMs).

A recommender is built (`build` in baselines/registry.py) from its method config (`family` plus
hyperparameters) and a seed, fitted on a ProcessedDataset, and asked for the top-k items of sample rows.
Score-based models implement `score_batch`; `recommend` turns scores into ranked lists in batches so
that full ranking over all items stays vectorised and memory-bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import torch

from latentrec.data.processed_io import ProcessedDataset
from latentrec.io_utils import progress


class Recommender(ABC):
    family: str = ""  # the config's `family`; baselines/registry.py maps it to the class
    param_choices: dict[str, tuple] = {}  # allowed values of string hyperparameters

    def __init__(self, params: dict, seed: int = 0):
        self.params = params
        self.seed = seed

    @classmethod
    def hyperparameters(cls) -> dict:
        """{name: default} of every hyperparameter the family reads (`params` may set only these)."""
        return {}

    @classmethod
    def check_combination(cls, hp: dict) -> None:
        """Constraints between hyperparameters (hp: defaults with params laid over); ValueError naming one."""

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

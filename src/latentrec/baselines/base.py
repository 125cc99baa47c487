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
    model = _REGISTRY[family](params=dict(params or {}), seed=seed)
    check_params(family, params)  # after the constructor's own checks (its messages name the family)
    return model


# Bounds of the hyperparameters the families share (sizes >= 1, rates > 0); types follow the defaults.
AT_LEAST = {
    **dict.fromkeys(("hidden", "mlp_hidden", "n_layers", "n_heads", "max_epochs", "batch_size", "eval_batch_size",
                     "max_len", "n_h", "n_v"), 1),
    "patience": 1,  # epochs without improvement before stopping (0 would stop after the first epoch)
    **dict.fromkeys(("n_negatives", "weight_decay", "dropout"), 0),
}
ABOVE = {"lr": 0, "tau": 0}
BELOW = {"dropout": 1}


def check_params(family: str, params: dict | None) -> None:
    """A family's hyperparameters, checked before anything is built: known keys (the family's defaults), the
    defaults' types, positive sizes and rates. Raises ValueError("<key>: must be ..., got ...")."""
    from latentrec.config import check_value

    _import_all()
    if family not in _REGISTRY:
        raise ValueError(f"unknown recommender family {family!r}; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[family]
    defaults = cls.hyperparameters()
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} of family {family!r}; known: {sorted(defaults) or 'none'}")
    for key, value in params.items():
        default = defaults[key]
        kind = None if default is None else type(default).__name__  # int, float, bool, str
        check_value(key, value, kind, at_least=AT_LEAST.get(key), above=ABOVE.get(key), below=BELOW.get(key),
                    choices=cls.param_choices.get(key))
    cls.check_combination({**defaults, **params})


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

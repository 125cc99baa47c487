"""One fit/predict interface for every recommender (MostPop, Caser, GRU4Rec, SASRec, AlphaRec, LLMs).

A recommender is built (`build` in baselines/registry.py) from its method config (`family` plus
hyperparameters) and a seed, fitted on a ProcessedDataset, and asked for the top-k items of sample rows.
Score-based models implement `score_batch`; `recommend` turns scores into ranked lists in batches so
that full ranking over all items stays vectorised and memory-bounded. `EarlyStopping` is the epoch
bookkeeping the trained baselines share.
"""

from __future__ import annotations

import copy
import time
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


class EarlyStopping:
    """Per-epoch log entries, the best state by validation NDCG@10 and a stop after `patience` epochs
    without it improving, for a trainer whose `log` already holds the per-epoch lists it is given:

        stopper = EarlyStopping(model, log, max_epochs, patience)
        for epoch in stopper.epochs("sasrec: epoch"):
            ...  # one epoch of training, then validation
            if stopper.update(epoch, train_loss, ndcg, epoch_seconds=..., eval_seconds=...):
                break
        stopper.finish(t_start)  # the best weights back, eval mode, the run's summary in `log`
    """

    def __init__(self, model: torch.nn.Module, log: dict, max_epochs: int, patience: int):
        self.model, self.log = model, log
        self.max_epochs, self.patience = int(max_epochs), int(patience)
        self.best, self.best_epoch, self.best_state, self.bad = -1.0, 0, None, 0
        self.bar = None

    def epochs(self, desc: str):
        """Epochs 1..max_epochs under a progress bar (which `update` labels with the loss and NDCG)."""
        self.bar = progress(range(1, self.max_epochs + 1), desc=desc, unit="epoch")
        return self.bar

    def update(self, epoch: int, train_loss: float, ndcg: float, **seconds: float) -> bool:
        """Log one epoch (`seconds`: this epoch's value of each named timing list); True: stop training."""
        self.log["train_loss"].append(train_loss)
        self.log["valid_ndcg@10"].append(ndcg)
        for key, value in seconds.items():
            self.log[key].append(value)
        if hasattr(self.bar, "set_postfix"):
            self.bar.set_postfix(loss=f"{train_loss:.4f}", ndcg10=f"{ndcg:.4f}", best=self.best_epoch)
        if ndcg > self.best:
            self.best, self.best_epoch, self.bad = ndcg, epoch, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            return False
        self.bad += 1
        return self.bad >= self.patience

    def finish(self, t_start: float) -> dict:
        """Load the best state, set eval mode and add the summary (`t_start`: the fit's perf_counter start)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        log = self.log
        log["epochs_run"] = len(log["train_loss"])
        log["best_epoch"] = self.best_epoch
        log["best_valid_ndcg@10"] = self.best
        log["stopped_early"] = log["epochs_run"] < self.max_epochs
        log["total_seconds"] = time.perf_counter() - t_start
        return log


def topk_stable(scores: torch.Tensor, k: int):
    """torch.topk with a deterministic tie rule: equal scores rank by ascending item id.

    torch.topk's order among ties is unspecified; a stable descending sort fixes it.
    """
    k = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    return torch.return_types.topk((order.values[:, :k], order.indices[:, :k]))

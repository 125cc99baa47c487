"""MostPop: rank items by how often they are a target in the train split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from latentrec.baselines.base import Recommender
from latentrec.data.processed_io import ProcessedDataset


class MostPop(Recommender):
    family = "mostpop"

    def fit(self, data: ProcessedDataset) -> dict:
        counts = np.bincount(data.train["item_id"].to_numpy(), minlength=data.n_items)
        self.popularity = torch.as_tensor(counts, dtype=torch.float32)
        return {"n_train_targets": int(counts.sum()), "max_count": int(counts.max())}

    def score_batch(self, samples: pd.DataFrame) -> torch.Tensor:
        return self.popularity.expand(len(samples), -1)

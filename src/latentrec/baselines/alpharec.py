"""AlphaRec (Sheng et al., ICLR 2025): language representations of items as a recommender's input.

The model, as in its paper:
  * every item starts from a frozen language representation: here the configured backbone LLM's
    last hidden state, mean-pooled over the tokens of the item title (`title_embeddings`, computed
    once per dataset and backbone by the `item-embeddings` command and cached as a .npy file);
  * a learned 2-layer MLP (Linear, LeakyReLU, Linear) maps it into a small CF space; a user starts
    from the MLP of the mean language representation of the items it interacted with;
  * LightGCN propagation over the user-item bipartite graph of the TRAIN split (symmetrically
    normalised adjacency D^-1/2 A D^-1/2, `n_layers` layers, no weights, the final representation the
    mean of the layer outputs);
  * InfoNCE on cosine similarities with temperature `tau` against sampled negative items;
  * early stopping on validation NDCG@10 under full ranking (the protocol of the other baselines).

Adaptation to the sliding-window samples (user_id, history of <= 10 items, target):
  * graph users are the train `user_id`s; their edges are every item of their train histories and
    targets (deduplicated);
  * the user of a sample row is its history, folded into the trained graph the way LightGCN treats a
    new node: layer 0 is the MLP of the history's mean language representation, layer l sums the
    items' layer l-1 outputs with weights 1/sqrt(|history| * deg(item)). Valid and test rows are
    scored this way, and so are the train rows the loss is computed on, so training and evaluation
    ask the same question (next item from a history). Users of the published CDs split are partly
    pseudo ids (`pseudo_<n>`), so a row's user id alone could not name its graph node anyway.

Per step the whole graph is propagated (it is small: items + train users, 64-d), so gradients reach
the MLP through every path. The first MLP layer is linear, so a user's layer-0 pre-activation is the
mean of its items' pre-activations: the language representations pass through the MLP once per step,
not once per user.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from latentrec.baselines.base import EarlyStopping, Recommender
from latentrec.baselines.sequential import MAX_LEN, ndcg_at_k_full, pad_histories
from latentrec.data.processed_io import ProcessedDataset
from latentrec.io_utils import progress

DEFAULTS = {
    "lr": 5e-4,  # AlphaRec's paper
    "weight_decay": 0.0,
    "tau": 0.15,  # AlphaRec's paper
    "hidden": 64,  # CF-space dimension
    "mlp_hidden": 256,
    "n_layers": 2,  # LightGCN layers (AlphaRec: 2)
    "n_negatives": 256,  # uniform negatives per batch, shared by its rows; 0 = softmax over all items
    "batch_size": 4096,
    "max_epochs": 200,
    "patience": 10,
    "eval_batch_size": 1024,
    "max_len": MAX_LEN,
    "standardize": True,  # z-score every language dimension over items (LLM hidden states have outlier dims)
    "exclude_history": False,  # as the sequential models: the protocol ranks all items
    "item_embeddings": None,  # path of the .npy [n_items, d_lm] (or an array, from Python)
    "device": "cpu",
}


# ----------------------------------------------------------------------------- language representations


@torch.no_grad()
def title_embeddings(
    model, tokenizer, titles: list[str], batch_size: int = 64, max_tokens: int = 64, desc: str = "title embeddings"
) -> np.ndarray:
    """Mean-pooled last hidden state of each title under a causal LM: float32 [len(titles), hidden].

    Runs the decoder body only (no LM head). Titles are batched by token length, so padding (masked
    out of attention and of the mean) stays small.
    """
    model.eval()
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    device = next(model.parameters()).device
    enc = tokenizer(
        [t if t else (tokenizer.eos_token or " ") for t in titles],
        add_special_tokens=True,
        truncation=True,
        max_length=max_tokens,
    )["input_ids"]
    enc = [ids if ids else [tokenizer.eos_token_id] for ids in enc]
    order = np.argsort([len(ids) for ids in enc], kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(titles), model.config.hidden_size), dtype=np.float32)
    for s in progress(range(0, len(order), batch_size), desc=desc, unit="batch"):
        rows = order[s : s + batch_size]
        width = max(len(enc[r]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):  # right padding: positions 0..len-1 as for a lone title
            ids[j, : len(enc[r])] = torch.tensor(enc[r])
            mask[j, : len(enc[r])] = 1
        ids, mask = ids.to(device), mask.to(device)
        h = body(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).float()
        out[rows] = ((h * m).sum(1) / m.sum(1)).cpu().numpy()
    return out


def load_item_embeddings(source, n_items: int) -> np.ndarray:
    arr = np.load(source) if isinstance(source, (str, Path)) else np.asarray(source)
    if arr.ndim != 2 or arr.shape[0] != n_items:
        raise ValueError(
            f"item embeddings: expected [{n_items}, d], got {list(arr.shape)} "
            f"({source if isinstance(source, (str, Path)) else 'array'})"
        )
    if not np.isfinite(arr).all():
        raise ValueError("item embeddings contain NaN or inf")
    return arr.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- graph


class BipartiteGraph:
    """Train user-item graph: normalised adjacency blocks as sparse tensors, and degrees."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, device):
        pairs = np.unique(np.stack([users, items], 1), axis=0)
        u, i = pairs[:, 0], pairs[:, 1]
        self.n_users, self.n_items, self.n_edges = n_users, n_items, len(pairs)
        deg_u = np.bincount(u, minlength=n_users).astype(np.float64)
        deg_i = np.bincount(i, minlength=n_items).astype(np.float64)
        w = 1.0 / np.sqrt(deg_u[u] * deg_i[i])
        idx = torch.as_tensor(np.stack([u, i]), dtype=torch.long)
        self.ui = (
            torch.sparse_coo_tensor(
                idx, torch.as_tensor(w, dtype=torch.float32), (n_users, n_items), check_invariants=True
            )
            .coalesce()
            .to(device)
        )
        self.iu = self.ui.t().coalesce()
        # Row-normalised user -> items (mean over a user's items), for the users' layer-0 input.
        mean_w = torch.as_tensor(1.0 / deg_u[u], dtype=torch.float32)
        self.user_mean = (
            torch.sparse_coo_tensor(idx, mean_w, (n_users, n_items), check_invariants=True).coalesce().to(device)
        )
        self.deg_items = torch.as_tensor(deg_i, dtype=torch.float32, device=device)


# ----------------------------------------------------------------------------- model


class AlphaRecModel(nn.Module):
    def __init__(self, lm: torch.Tensor, graph: BipartiteGraph, hidden: int, mlp_hidden: int, n_layers: int):
        super().__init__()
        self.register_buffer("lm", lm, persistent=False)  # [n_items, d_lm], frozen
        self.graph = graph
        self.n_layers = n_layers
        self.fc1 = nn.Linear(lm.shape[1], mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden)

    def _head(self, pre: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(pre))

    def propagate(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(item pre-activations of the MLP [n_items, mlp_hidden], item layer outputs 0..L-1)
        and, as the last element of the list, the items' final representation (mean over 0..L)."""
        g = self.graph
        pre_i = self.fc1(self.lm)
        e_i = self._head(pre_i)
        e_u = self._head(torch.sparse.mm(g.user_mean, pre_i))  # MLP of the mean of the user's items
        layers_i, final_i = [e_i], e_i
        for _ in range(self.n_layers):
            e_u, e_i = torch.sparse.mm(g.ui, e_i), torch.sparse.mm(g.iu, e_u)
            layers_i.append(e_i)
            final_i = final_i + e_i
        final_i = final_i / (self.n_layers + 1)
        return pre_i, layers_i[: self.n_layers] + [final_i]

    def fold_in(self, hist: torch.Tensor, pre_i: torch.Tensor, layers_i: list[torch.Tensor]) -> torch.Tensor:
        """Representations [B, hidden] of histories [B, L] (padded with n_items) as new user nodes.

        Weighted bags (embedding_bag) gather and sum in one kernel, without a [B, L, dim] copy.
        """
        n_items = pre_i.shape[0]
        vf = (hist != n_items).to(pre_i.dtype)
        idx = hist.clamp(max=n_items - 1)
        n = vf.sum(1, keepdim=True)  # >= 1: histories are never empty
        total = self._head(F.embedding_bag(idx, pre_i, per_sample_weights=vf / n, mode="sum"))
        # LightGCN weight of a new edge (u, i): 1/sqrt(deg_u deg_i); items absent from train count 1.
        w = vf / torch.sqrt(n * self.graph.deg_items[idx].clamp(min=1.0))  # [B, L]
        for layer in layers_i[: self.n_layers]:
            total = total + F.embedding_bag(idx, layer, per_sample_weights=w, mode="sum")
        return total / (self.n_layers + 1)


# ----------------------------------------------------------------------------- recommender


class AlphaRec(Recommender):
    family = "alpharec"

    @classmethod
    def hyperparameters(cls) -> dict:
        return DEFAULTS

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        unknown = set(self.params) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"AlphaRec: unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.hp = {**DEFAULTS, **self.params}
        if self.hp["item_embeddings"] is None:
            raise ValueError(
                "AlphaRec needs `item_embeddings` (the backbone's title embeddings, "
                "written by `python -m latentrec item-embeddings`)"
            )
        self.model: AlphaRecModel | None = None
        self._cache = None

    def _matrix(self, df: pd.DataFrame) -> torch.Tensor:
        return pad_histories(df["history_item_ids"], pad=self.n_items, max_len=int(self.hp["max_len"]))

    def _build(self, data: ProcessedDataset, device) -> AlphaRecModel:
        hp = self.hp
        lm = load_item_embeddings(hp["item_embeddings"], data.n_items)
        if hp["standardize"]:
            lm = (lm - lm.mean(0)) / (lm.std(0) + 1e-6)
        train = data.train
        user_codes, _ = pd.factorize(train["user_id"], sort=False)
        lens = train["history_item_ids"].map(len).to_numpy()
        users = np.concatenate([np.repeat(user_codes, lens), user_codes])
        items = np.concatenate(
            [
                np.concatenate(train["history_item_ids"].to_numpy()).astype(np.int64),
                train["item_id"].to_numpy(dtype=np.int64),
            ]
        )
        self.graph = BipartiteGraph(users, items, int(user_codes.max()) + 1, data.n_items, device)
        return AlphaRecModel(
            torch.as_tensor(lm, device=device),
            self.graph,
            int(hp["hidden"]),
            int(hp["mlp_hidden"]),
            int(hp["n_layers"]),
        ).to(device)

    def fit(self, data: ProcessedDataset) -> dict:
        hp = self.hp
        t_start = time.perf_counter()
        torch.manual_seed(self.seed)  # MLP init
        gen = torch.Generator().manual_seed(self.seed)  # permutations and negatives
        device = torch.device(hp["device"])
        self.n_items = n_items = data.n_items
        self.model = model = self._build(data, device)
        hist = self._matrix(data.train)
        target = torch.as_tensor(data.train["item_id"].to_numpy(copy=True), dtype=torch.int64)
        valid_hist = self._matrix(data.valid).to(device)
        valid_target = torch.as_tensor(data.valid["item_id"].to_numpy(copy=True), dtype=torch.int64, device=device)
        n, bs, n_neg, tau = len(target), int(hp["batch_size"]), int(hp["n_negatives"]), float(hp["tau"])

        opt = torch.optim.Adam(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
        log = {
            "family": self.family,
            "seed": self.seed,
            "params": {
                k: (str(v) if k == "item_embeddings" and not isinstance(v, (str, type(None))) else v)
                for k, v in hp.items()
            },
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "lm_dim": int(model.lm.shape[1]),
            "graph": {"users": self.graph.n_users, "items": n_items, "edges": self.graph.n_edges},
            "n_train": n,
            "n_valid": len(valid_target),
            "train_loss": [],
            "valid_ndcg@10": [],
            "epoch_seconds": [],
            "eval_seconds": [],
        }
        stopper = EarlyStopping(model, log, hp["max_epochs"], hp["patience"])
        for epoch in stopper.epochs("alpharec: epoch"):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(0, n, bs):
                idx = perm[s : s + bs]
                h_b, pos_b = hist[idx].to(device), target[idx].to(device)
                pre_i, layers = model.propagate()
                items = F.normalize(layers[-1], dim=-1)
                users = F.normalize(model.fold_in(h_b, pre_i, layers), dim=-1)
                pos = (users * items[pos_b]).sum(-1, keepdim=True) / tau  # [B, 1]
                if n_neg > 0:
                    neg_ids = torch.randint(0, n_items, (n_neg,), generator=gen).to(device)
                    neg = users @ items[neg_ids].T / tau  # [B, n_neg], shared by the batch
                    neg = neg.masked_fill(neg_ids[None, :] == pos_b[:, None], float("-inf"))  # never the positive
                    loss = (torch.logsumexp(torch.cat([pos, neg], 1), 1) - pos[:, 0]).mean()
                else:  # softmax over every item
                    loss = F.cross_entropy(users @ items.T / tau, pos_b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            te = time.perf_counter()
            ndcg = self._evaluate(valid_hist, valid_target)
            t1 = time.perf_counter()
            if stopper.update(epoch, total / n, ndcg, epoch_seconds=t1 - t0, eval_seconds=t1 - te):
                break
        self._cache = None  # scoring propagates the restored best weights afresh
        return stopper.finish(t_start)

    # -- scoring

    @torch.no_grad()
    def _propagated(self):
        """Propagation of the trained model, computed once for all scoring calls."""
        if self._cache is None or self.model.training:
            pre_i, layers = self.model.propagate()
            self._cache = (pre_i, layers, F.normalize(layers[-1], dim=-1))
        return self._cache

    @torch.no_grad()
    def _full_scores(self, hist: torch.Tensor) -> torch.Tensor:
        pre_i, layers, items = self._propagated()
        scores = F.normalize(self.model.fold_in(hist, pre_i, layers), dim=-1) @ items.T  # cosine
        if self.hp["exclude_history"]:
            idx = torch.where(hist != self.n_items, hist, hist[:, -1:])
            scores = scores.scatter(1, idx, float("-inf"))
        return scores

    @torch.no_grad()
    def _evaluate(self, hist: torch.Tensor, target: torch.Tensor) -> float:
        self.model.eval()
        self._cache = None  # the weights changed since the last call
        bs = int(self.hp["eval_batch_size"])
        total = 0.0
        for s in range(0, len(target), bs):
            total += float(ndcg_at_k_full(self._full_scores(hist[s : s + bs]), target[s : s + bs], 10).sum())
        self._cache = None
        return total / max(len(target), 1)

    @torch.no_grad()
    def score_batch(self, samples: pd.DataFrame) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("alpharec: call fit() before score_batch()")
        self.model.eval()
        device = self.model.lm.device
        hist = self._matrix(samples).to(device)
        if not len(hist):
            return torch.empty(0, self.n_items, device=device)
        bs = int(self.hp["eval_batch_size"])
        return torch.cat([self._full_scores(hist[s : s + bs]) for s in range(0, len(hist), bs)])

"""Traditional sequential recommenders of the LatentR3/FLR papers: Caser, GRU4Rec and SASRec.

Training protocol (LatentR3 appendix C):
  * every sample row (history of at most 10 items -> target item) is one training example;
  * Adam with L2 weight decay, binary cross-entropy against `n_negatives` items per positive, drawn
    uniformly from all items other than the target and redrawn every epoch (`loss: bce`, the papers'
    protocol). `loss: ce` instead trains with cross-entropy over the full item set: the logits of a
    row are its sequence representation times every output item vector (the softmax a well-kept
    library such as RecBole uses with `loss_type: CE`); no negatives are drawn;
  * after every epoch, full ranking of the validation rows over all items; the state with the best
    validation NDCG@10 is kept, and training stops after `patience` epochs without improvement;
  * at test time, full ranking over all items (`score_batch` returns [n, n_items]).

Histories are left-padded to MAX_LEN with the padding index `n_items` (embedding tables have
n_items + 1 rows, the last one a fixed zero `padding_idx` row), so the most recent item always sits
in the last column. Each encoder is written so that padding never leaks into a score: SASRec masks
padded keys, GRU4Rec packs the sequences, Caser ignores all-padding convolution windows.

Batch construction is vectorised: the padded history matrix of a split is built once as an int64
tensor, an epoch indexes it with one random permutation, and the epoch's negatives come from one
torch.randint call.
"""

from __future__ import annotations

import abc
import itertools
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from latentrec.baselines.base import EarlyStopping, Recommender
from latentrec.data.processed_io import ProcessedDataset

MAX_LEN = 10

COMMON_DEFAULTS = {
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "hidden": 64,
    "dropout": 0.2,
    "max_epochs": 200,
    "batch_size": 256,
    "patience": 5,
    "n_negatives": 1,
    "eval_batch_size": 1024,
    "max_len": MAX_LEN,
    "device": "cpu",
    # Rank the row's history items last (score -inf), as RecBole does for non-repeatable
    # sequential data. Off by default: the protocol ranks all items. See _mask_history.
    "exclude_history": False,
    # "bce": the papers' BCE against n_negatives sampled items; "ce": full softmax over all items.
    "loss": "bce",
}

LOSSES = ("bce", "ce")


def pad_histories(histories, pad: int, max_len: int = MAX_LEN) -> torch.Tensor:
    """Left-pad lists of item ids (oldest first) into an int64 [n, max_len] matrix.

    Histories longer than max_len keep their most recent max_len items. Vectorised: one flat array
    of all ids, scattered into place by computed row/column indices.
    """
    histories = list(histories)
    n = len(histories)
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
    if n and lens.min() < 1:
        raise ValueError("empty history in a sample row")
    if n and lens.max() > max_len:
        histories = [h[-max_len:] if len(h) > max_len else h for h in histories]
        lens = np.minimum(lens, max_len)
    total = int(lens.sum())
    flat = np.fromiter(itertools.chain.from_iterable(histories), dtype=np.int64, count=total)
    rows = np.repeat(np.arange(n), lens)
    starts = np.cumsum(lens) - lens  # offset of each row's first id inside `flat`
    cols = (max_len - lens)[rows] + (np.arange(total) - starts[rows])
    out = np.full((n, max_len), pad, dtype=np.int64)
    out[rows, cols] = flat
    return torch.from_numpy(out)


def ndcg_at_k_full(scores: torch.Tensor, targets: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Per-row NDCG@k of the target under full ranking, ties ranked by ascending item id
    (the same rule as base.topk_stable)."""
    t = scores.gather(1, targets[:, None])
    ids = torch.arange(scores.shape[1], device=scores.device)
    rank = (scores > t).sum(1) + ((scores == t) & (ids[None, :] < targets[:, None])).sum(1)
    return torch.where(rank < k, 1.0 / torch.log2(rank.double() + 2.0), torch.zeros((), dtype=torch.float64))


def batch_loss(
    model: "_SeqModel", hist: torch.Tensor, target: torch.Tensor, neg: torch.Tensor | None, loss: str
) -> torch.Tensor:
    """Training loss of one batch: histories [B, L], targets [B], sampled negatives [B, n_neg] (bce only)."""
    if loss == "ce":
        return F.cross_entropy(model.full_scores(hist), target)  # softmax over all n_items
    logits = model.pair_scores(hist, torch.cat([target[:, None], neg], dim=1))  # [B, 1 + n_neg]
    # BCE: mean over positives plus mean over negatives (Caser/SASRec reference form).
    return F.softplus(-logits[:, 0]).mean() + F.softplus(logits[:, 1:]).mean()


# ----------------------------------------------------------------------------- encoders


class _SeqModel(nn.Module, abc.ABC):
    """Base: encode a padded history [B, L] into [B, hidden]; score against output item vectors."""

    def __init__(self, n_items: int):
        super().__init__()
        self.n_items = n_items
        self.pad = n_items

    @abc.abstractmethod
    def encode(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] padded histories -> [B, hidden] sequence representations."""

    @abc.abstractmethod
    def output_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item vectors [n_items, hidden] (padding row excluded) and an optional bias [n_items]."""

    def full_scores(self, hist: torch.Tensor) -> torch.Tensor:
        w, b = self.output_weights()
        s = self.encode(hist) @ w.T
        return s if b is None else s + b

    def pair_scores(self, hist: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of given items [B, m] for each row, without building the full [B, n_items] matrix."""
        w, b = self.output_weights()
        h = self.encode(hist)
        s = torch.einsum("bd,bmd->bm", h, w[items])
        return s if b is None else s + b[items]


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden {hidden} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # allowed: bool [B, 1, L, L], True where query i may attend to key j.
        B, L, H = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, H // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, H))


class SASRecBlock(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_attn = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = CausalSelfAttention(hidden, n_heads, dropout)
        self.ln_ffn = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x, allowed, keep):
        # Pre-LN block as in the SASRec reference code: the normalised input is the query/residual.
        q = self.ln_attn(x)
        x = q + self.drop(self.attn(q, allowed))
        x = self.ln_ffn(x)
        x = x + self.ffn(x)
        return x * keep


class SASRecModel(_SeqModel):
    def __init__(self, n_items, hidden, dropout, max_len, n_layers, n_heads):
        super().__init__(n_items)
        self.hidden = hidden
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(hidden, n_heads, dropout) for _ in range(n_layers))
        self.ln_out = nn.LayerNorm(hidden, eps=1e-8)
        causal = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.apply(_init_normal)

    def encode(self, hist):
        B, L = hist.shape
        keep_b = hist != self.pad  # [B, L]
        keep = keep_b.unsqueeze(-1).to(self.item_emb.weight.dtype)
        # Left padding puts the latest item in column L-1, so positions count back from the end.
        x = self.item_emb(hist) * math.sqrt(self.hidden) + self.pos_emb.weight[-L:]
        x = self.emb_drop(x) * keep
        # Causal, and never attend to padding; the diagonal stays open so all-padding query rows
        # (whose outputs are zeroed) do not produce NaNs.
        eye = torch.eye(L, dtype=torch.bool, device=hist.device)
        allowed = (self.causal[:L, :L] & keep_b[:, None, :]) | eye
        allowed = allowed.unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed, keep)
        return self.ln_out(x[:, -1])

    def output_weights(self):
        return self.item_emb.weight[: self.n_items], None


class GRU4RecModel(_SeqModel):
    def __init__(self, n_items, hidden, dropout, n_layers=1):
        super().__init__(n_items)
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
        self.emb_drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=n_layers, batch_first=True)
        self.dense = nn.Linear(hidden, hidden)
        # std 1/sqrt(d) rather than Xavier (std ~0.02 for 5k items): with dot-product scores the
        # tiny init learns slowly (CDs valid NDCG@10 still ~0.010 after 15 epochs at lr 1e-3).
        nn.init.normal_(self.item_emb.weight, std=1.0 / math.sqrt(hidden))
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    def encode(self, hist):
        B, L = hist.shape
        lens = (hist != self.pad).sum(1)
        # Left-padded -> right-padded (latest item at column len-1), then pack so the GRU never
        # sees padding and h_n is the state after each row's last real item.
        col = torch.arange(L, device=hist.device)[None, :] + (L - lens)[:, None]
        right = hist.gather(1, col.clamp(max=L - 1))
        x = self.emb_drop(self.item_emb(right))
        packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        return self.dense(h_n[-1])

    def output_weights(self):
        return self.item_emb.weight[: self.n_items], None


class CaserModel(_SeqModel):
    """Caser; by default without its user embedding.

    The original model scores items against [z; P_u], the convolutional features z next to a
    per-user embedding. In these splits most valid/test users are unseen or pseudo ids (the CDs
    train file uses `pseudo_<row>` user ids), so the default is the sequence-only variant. With
    n_users > 0 the input rows are [user index, history...] and the user table has a fixed zero
    row 0 for users without train rows (they are scored from z alone).
    """

    def __init__(self, n_items, hidden, dropout, max_len, n_h, n_v, n_users=0):
        super().__init__(n_items)
        L, d = max_len, hidden
        self.max_len, self.n_h = L, n_h
        self.user_emb = nn.Embedding(n_users + 1, d, padding_idx=0) if n_users else None
        d_out = 2 * d if n_users else d
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        # Vertical filters (L x 1): n_v weighted sums over the L positions, per embedding dim.
        self.conv_v = nn.Linear(L, n_v)
        # Horizontal filters: n_h filters of each height h = 1..L spanning the whole embedding
        # (Conv2d(1, n_h, (h, d)) in the paper). All L heights are applied in one matmul: every
        # window of L rows ending at position t (rows before the sequence start are zeros) meets
        # a [L*n_h, L, d] weight whose height-h filters are zero except in their last h rows;
        # `h_mask` keeps those rows zero. Same function as L separate convolutions, ~10x faster.
        self.conv_h_weight = nn.Parameter(torch.empty(L, n_h, L, d))
        self.conv_h_bias = nn.Parameter(torch.empty(L, n_h))
        rows = torch.arange(L)
        heights = torch.arange(1, L + 1)
        self.register_buffer(
            "h_mask", (rows[None, :] >= L - heights[:, None]).float()[:, None, :, None], persistent=False
        )  # [L(h), 1, L(row), 1]
        # Window ending at t holds a complete height-h window iff t >= h-1.
        self.register_buffer("t_ok", (rows[None, :] >= heights[:, None] - 1).float(), persistent=False)  # [h, t]
        # Entries of conv_h_weight that h_mask keeps at zero: not parameters of the model.
        self.n_structural_zeros = int((1 - self.h_mask).sum().item()) * n_h * d
        self.fc = nn.Linear(n_v * d + n_h * L, d)
        self.drop = nn.Dropout(dropout)
        self.out_emb = nn.Embedding(n_items, d_out)
        self.out_bias = nn.Embedding(n_items, 1)
        with torch.no_grad():
            for h in range(1, L + 1):  # PyTorch's Conv default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                bound = 1.0 / math.sqrt(h * d)
                self.conv_h_weight[h - 1].uniform_(-bound, bound)
                self.conv_h_bias[h - 1].uniform_(-bound, bound)
            # The reference initialises embeddings with std 1/d; at d=64 that leaves the model in
            # a popularity-only plateau for ~10 epochs on CDs, which patience-5 early stopping
            # mistakes for convergence (test HR@10 ~0.02, MostPop level). std 1/sqrt(d) does not.
            nn.init.normal_(self.item_emb.weight, std=1.0 / math.sqrt(d))
            nn.init.normal_(self.out_emb.weight, std=1.0 / math.sqrt(d))
            nn.init.zeros_(self.out_bias.weight)
            self.item_emb.weight[n_items].zero_()
            if self.user_emb is not None:
                nn.init.normal_(self.user_emb.weight, std=1.0 / math.sqrt(d))
                self.user_emb.weight[0].zero_()

    def horizontal(self, e: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Max-pooled horizontal convolution features [B, L * n_h] (height-major) of e [B, L, d]."""
        B, L, d = e.shape
        padded = F.pad(e, (0, 0, L - 1, 0))  # [B, 2L-1, d]
        windows = padded.unfold(1, L, 1)  # [B, L(t), d, L(row)]
        windows = windows.transpose(2, 3).reshape(B * L, L * d)  # row-major [row, d]
        w = (self.conv_h_weight * self.h_mask).reshape(L * self.n_h, L * d)
        c = (windows @ w.T).view(B, L, L, self.n_h)  # [B, t, h, n_h]
        c = F.relu(c + self.conv_h_bias)
        # Drop incomplete windows (t < h-1) and windows ending on padding (given left padding,
        # those are all padding and would only contribute relu(bias)): zero them, which is <= any
        # ReLU output; the window ending at the latest item is always kept, so the max over t is a
        # max over real windows.
        keep = self.t_ok.T[None, :, :, None] * valid[:, :, None, None]  # [B, t, h, 1]
        return (c * keep).amax(dim=1).reshape(B, L * self.n_h)

    def encode(self, hist):
        users = None
        if self.user_emb is not None:  # rows are [user index, history]
            users, hist = hist[:, 0], hist[:, 1:]
        B, L = hist.shape
        if L != self.max_len:
            raise ValueError(f"Caser needs histories padded to {self.max_len}, got {L}")
        valid = (hist != self.pad).to(self.item_emb.weight.dtype)  # [B, L]
        # Padding rows as explicit zero vectors (zero padding, whatever the padding row holds).
        e = self.item_emb(hist) * valid.unsqueeze(-1)  # [B, L, d]
        out_v = self.conv_v(e.transpose(1, 2)).reshape(B, -1)  # [B, d, n_v] -> [B, d * n_v]
        z = self.drop(F.relu(self.fc(torch.cat([out_v, self.horizontal(e, valid)], dim=1))))
        return z if users is None else torch.cat([z, self.user_emb(users)], dim=1)

    def output_weights(self):
        return self.out_emb.weight, self.out_bias.weight.squeeze(1)


def _init_normal(module):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------- recommender


class SequentialRecommender(Recommender):
    """Shared training/evaluation loop; subclasses build their encoder in `_build_model`."""

    model_defaults: dict = {}
    param_choices = {"loss": LOSSES}

    @classmethod
    def hyperparameters(cls) -> dict:
        return {**COMMON_DEFAULTS, **cls.model_defaults}

    @classmethod
    def check_combination(cls, hp: dict) -> None:
        if hp["loss"] == "bce" and hp["n_negatives"] < 1:
            raise ValueError(
                f"n_negatives: must be >= 1 with loss 'bce' (negatives per positive), got {hp['n_negatives']}"
            )

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        known = set(COMMON_DEFAULTS) | set(self.model_defaults)
        unknown = set(self.params) - known
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        self.hp = {**COMMON_DEFAULTS, **self.model_defaults, **self.params}
        if self.hp["loss"] not in LOSSES:
            raise ValueError(f"{type(self).__name__}: loss must be one of {LOSSES}, got {self.hp['loss']!r}")
        self.model: _SeqModel | None = None

    @abc.abstractmethod
    def _build_model(self, n_items: int) -> _SeqModel:
        """The family's network for a catalog of n_items."""

    # -- data

    def _matrix(self, df: pd.DataFrame) -> torch.Tensor:
        return pad_histories(df["history_item_ids"], pad=self.n_items, max_len=int(self.hp["max_len"]))

    # -- training

    def fit(self, data: ProcessedDataset) -> dict:
        hp = self.hp
        t_start = time.perf_counter()
        torch.manual_seed(self.seed)  # model init and dropout
        gen = torch.Generator().manual_seed(self.seed)  # permutations and negatives
        device = torch.device(hp["device"])
        self.n_items = n_items = data.n_items
        self.model = model = self._build_model(n_items).to(device)
        n_params = sum(p.numel() for p in model.parameters()) - getattr(model, "n_structural_zeros", 0)

        hist = self._matrix(data.train)
        target = torch.as_tensor(data.train["item_id"].to_numpy(copy=True), dtype=torch.int64)
        valid_hist = self._matrix(data.valid).to(device)
        valid_target = torch.as_tensor(data.valid["item_id"].to_numpy(copy=True), dtype=torch.int64, device=device)
        n, bs, n_neg = len(target), int(hp["batch_size"]), int(hp["n_negatives"])

        opt = torch.optim.Adam(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
        log = {
            "family": self.family,
            "seed": self.seed,
            "params": dict(hp),
            "n_parameters": n_params,
            "n_train": n,
            "n_valid": len(valid_target),
            "train_loss": [],
            "valid_ndcg@10": [],
            "epoch_seconds": [],
            "batch_seconds": [],
            "compute_seconds": [],
            "eval_seconds": [],
        }
        stopper = EarlyStopping(model, log, hp["max_epochs"], hp["patience"])
        for epoch in stopper.epochs(f"{self.family}: epoch"):
            t0 = time.perf_counter()
            model.train()
            t_batch = t_compute = 0.0
            perm = torch.randperm(n, generator=gen)
            neg = None
            if hp["loss"] == "bce":
                # Uniform over the n_items-1 items other than the target: draw in [0, n_items-1)
                # and shift draws >= target up by one.
                neg = torch.randint(0, n_items - 1, (n, n_neg), generator=gen)
                neg += (neg >= target[:, None]).long()
            total, count = 0.0, 0
            for s in range(0, n, bs):
                tb = time.perf_counter()
                idx = perm[s : s + bs]
                h_b, pos_b = hist[idx].to(device), target[idx].to(device)
                neg_b = None if neg is None else neg[idx].to(device)
                tc = time.perf_counter()
                loss = batch_loss(model, h_b, pos_b, neg_b, hp["loss"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
                t_batch += tc - tb
                t_compute += time.perf_counter() - tc
            te = time.perf_counter()
            ndcg = self._evaluate(valid_hist, valid_target)
            t1 = time.perf_counter()
            seconds = {
                "epoch_seconds": t1 - t0,
                "batch_seconds": t_batch,
                "compute_seconds": t_compute,
                "eval_seconds": t1 - te,
            }
            if stopper.update(epoch, total / count, ndcg, **seconds):
                break
        return stopper.finish(t_start)

    def _full_scores(self, hist: torch.Tensor) -> torch.Tensor:
        scores = self.model.full_scores(hist)
        return self._mask_history(scores, hist) if self.hp["exclude_history"] else scores

    def _mask_history(self, scores: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """Set the scores of each row's history items to -inf.

        Why it exists: with uniform negatives an item almost never appears as its own negative, and
        models that share input/output item embeddings (SASRec above all, through its residual
        path) learn to score the latest history item highest although it is rarely the target.
        """
        # Padding (index n_items) has no score column; point it at the row's latest item, which
        # is always real and masked anyway.
        idx = torch.where(hist != self.n_items, hist, hist[:, -1:])
        return scores.scatter(1, idx, float("-inf"))

    @torch.no_grad()
    def _evaluate(self, hist: torch.Tensor, target: torch.Tensor) -> float:
        self.model.eval()
        bs = int(self.hp["eval_batch_size"])
        total = 0.0
        for s in range(0, len(target), bs):
            scores = self._full_scores(hist[s : s + bs])
            total += float(ndcg_at_k_full(scores, target[s : s + bs], 10).sum())
        return total / max(len(target), 1)

    # -- inference

    @torch.no_grad()
    def score_batch(self, samples: pd.DataFrame) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"{self.family}: call fit() before score_batch()")
        self.model.eval()
        device = next(self.model.parameters()).device
        hist = self._matrix(samples).to(device)
        bs = int(self.hp["eval_batch_size"])
        if not len(hist):
            return torch.empty(0, self.n_items, device=device)
        return torch.cat([self._full_scores(hist[s : s + bs]) for s in range(0, len(hist), bs)])


class SASRec(SequentialRecommender):
    family = "sasrec"
    model_defaults = {"n_layers": 2, "n_heads": 1}

    @classmethod
    def check_combination(cls, hp: dict) -> None:
        super().check_combination(hp)
        if hp["hidden"] % hp["n_heads"]:
            raise ValueError(f"n_heads: must divide hidden ({hp['hidden']}), got {hp['n_heads']}")

    def _build_model(self, n_items):
        hp = self.hp
        return SASRecModel(
            n_items,
            int(hp["hidden"]),
            float(hp["dropout"]),
            int(hp["max_len"]),
            int(hp["n_layers"]),
            int(hp["n_heads"]),
        )


class GRU4Rec(SequentialRecommender):
    family = "gru4rec"
    model_defaults = {"n_layers": 1}

    def _build_model(self, n_items):
        hp = self.hp
        return GRU4RecModel(n_items, int(hp["hidden"]), float(hp["dropout"]), int(hp["n_layers"]))


class Caser(SequentialRecommender):
    family = "caser"
    # user_embedding: the original Caser's per-user vector P_u (train users only; see CaserModel).
    model_defaults = {"n_h": 16, "n_v": 4, "user_embedding": False}
    user_index: dict = {}

    def fit(self, data: ProcessedDataset) -> dict:
        if self.hp["user_embedding"]:
            # Index 0 is every user without train rows.
            self.user_index = {u: i + 1 for i, u in enumerate(pd.unique(data.train["user_id"]))}
        return super().fit(data)

    def _matrix(self, df: pd.DataFrame) -> torch.Tensor:
        hist = super()._matrix(df)
        if not self.hp["user_embedding"]:
            return hist
        users = df["user_id"].map(self.user_index).fillna(0).to_numpy(dtype=np.int64, copy=True)
        return torch.cat([torch.from_numpy(users)[:, None], hist], dim=1)

    def _mask_history(self, scores: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        return super()._mask_history(scores, hist[:, 1:] if self.hp["user_embedding"] else hist)

    def _build_model(self, n_items):
        hp = self.hp
        return CaserModel(
            n_items,
            int(hp["hidden"]),
            float(hp["dropout"]),
            int(hp["max_len"]),
            int(hp["n_h"]),
            int(hp["n_v"]),
            n_users=len(self.user_index),
        )

"""Caser, GRU4Rec and SASRec on a small synthetic dataset with strong sequential structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from latentrec.baselines import registry
from latentrec.baselines.sequential import MAX_LEN, pad_histories
from latentrec.data.processed_io import SAMPLE_COLUMNS, ProcessedDataset
from latentrec.eval.metrics import hit_positions_by_id, row_metrics

N_ITEMS = 200
MODELS = ("caser", "gru4rec", "sasrec")
# Small, fast settings: the structure is easy, so a higher learning rate and a few epochs suffice.
FAST = {"lr": 1e-2, "weight_decay": 0.0, "hidden": 32, "max_epochs": 8, "patience": 3, "batch_size": 128}
PER_MODEL = {"caser": {"n_h": 4, "n_v": 2}, "gru4rec": {}, "sasrec": {}}


def _rows(rng: np.random.Generator, n: int, user_prefix: str) -> pd.DataFrame:
    """Walks where item i is followed by i+1 (mod N) with prob. 0.85, else by a random item."""
    recs = []
    for r in range(n):
        length = int(rng.integers(1, MAX_LEN + 1))
        seq = [int(rng.integers(N_ITEMS))]
        for _ in range(length):
            nxt = (seq[-1] + 1) % N_ITEMS if rng.random() < 0.85 else int(rng.integers(N_ITEMS))
            seq.append(nxt)
        recs.append(
            {
                "user_id": f"{user_prefix}{r}",
                "history_item_ids": seq[:-1],
                "item_id": seq[-1],
                "history_ratings": None,
                "rating": np.nan,
                "history_timestamps": None,
                "timestamp": pd.NA,
            }
        )
    return pd.DataFrame(recs, columns=SAMPLE_COLUMNS)


@pytest.fixture(scope="module")
def data() -> ProcessedDataset:
    rng = np.random.default_rng(123)
    items = pd.DataFrame(
        {
            "item_id": np.arange(N_ITEMS),
            "asin": [f"A{i}" for i in range(N_ITEMS)],
            "title": [f"item {i}" for i in range(N_ITEMS)],
        }
    )
    ds = ProcessedDataset(
        items=items, train=_rows(rng, 3000, "tr"), valid=_rows(rng, 300, "va"), test=_rows(rng, 300, "te")
    )
    ds.validate()
    return ds


def _params(family: str) -> dict:
    return {**FAST, **PER_MODEL[family]}


def _hr10(model, ds: ProcessedDataset) -> tuple[float, np.ndarray]:
    ids, _ = model.recommend(ds.test, 10)
    pos = hit_positions_by_id(ids, ds.test["item_id"].to_numpy())
    return float(row_metrics(pos, ks=(10,))["HR@10"].mean()), ids


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: one thread is as fast, immune to oversubscription on a busy machine, and keeps
    # float reduction order (hence the reproducibility checks) independent of the thread count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted(data):
    out = {}
    for family in MODELS:
        model = registry.build(family, _params(family), seed=7)
        out[family] = (model, model.fit(data))
    return out


@pytest.fixture(scope="module")
def mostpop_hr10(data) -> float:
    model = registry.build("mostpop")
    model.fit(data)
    return _hr10(model, data)[0]


def test_families_registered():
    assert set(MODELS) <= set(registry.families())


def test_pad_histories_left_pads_and_truncates():
    m = pad_histories([[5], [1, 2, 3], list(range(12))], pad=99, max_len=4)
    assert m.dtype == torch.int64
    assert m.tolist() == [[99, 99, 99, 5], [99, 1, 2, 3], [8, 9, 10, 11]]


def test_unknown_hyperparameter_rejected():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        registry.build("sasrec", {"n_layer": 3})


@pytest.mark.parametrize("family", MODELS)
def test_log_and_loss_falls(fitted, family):
    _, log = fitted[family]
    assert log["train_loss"][-1] < log["train_loss"][0]
    n = log["epochs_run"]
    assert len(log["valid_ndcg@10"]) == len(log["epoch_seconds"]) == n
    assert 1 <= log["best_epoch"] <= n
    assert log["best_valid_ndcg@10"] == max(log["valid_ndcg@10"])
    assert log["n_parameters"] > 0 and log["total_seconds"] > 0


@pytest.mark.parametrize("family", MODELS)
def test_beats_mostpop(fitted, data, mostpop_hr10, family):
    hr, _ = _hr10(fitted[family][0], data)
    assert hr > mostpop_hr10 + 0.3, (family, hr, mostpop_hr10)


@pytest.mark.parametrize("family", MODELS)
def test_reproducible_with_same_seed(fitted, data, family):
    model, log = fitted[family]
    again = registry.build(family, _params(family), seed=7)
    log2 = again.fit(data)
    assert log2["train_loss"] == log["train_loss"]
    _, ids1 = _hr10(model, data)
    _, ids2 = _hr10(again, data)
    np.testing.assert_array_equal(ids1, ids2)


@pytest.mark.parametrize("family", MODELS)
def test_score_shape_padding_and_ranking(fitted, data, family):
    model, _ = fitted[family]
    samples = data.test.iloc[:50].copy()
    samples["history_item_ids"] = [list(range(i, i + MAX_LEN)) for i in range(50)]  # full-length
    short = data.test.iloc[[0]].copy()
    short["history_item_ids"] = [[17, 18, 19]]
    mixed = pd.concat([samples.iloc[:20], short, samples.iloc[20:]], ignore_index=True)

    scores = model.score_batch(mixed)
    assert scores.shape == (len(mixed), N_ITEMS)
    alone = model.score_batch(short)
    assert alone.shape == (1, N_ITEMS)
    torch.testing.assert_close(scores[20:21], alone, rtol=1e-5, atol=1e-5)
    # The sequential pattern was learned: after 17, 18, 19 comes 20. (Top-10, not top-1: with
    # shared item embeddings and uniform negatives SASRec tends to rank the latest item first.)
    assert 20 in torch.topk(alone[0], 10).indices.tolist()

    ids, vals = model.recommend(mixed, k=10)
    assert ids.shape == vals.shape == (len(mixed), 10)
    assert np.all(np.diff(vals, axis=1) <= 0)
    np.testing.assert_allclose(vals, np.take_along_axis(scores.numpy(), ids, axis=1), rtol=1e-6)


@pytest.mark.parametrize("family", MODELS)
def test_padding_tokens_do_not_leak(data, family):
    """Scores of a short history don't depend on what the padding embedding holds."""
    model = registry.build(family, {**_params(family), "max_epochs": 1}, seed=1)
    model.fit(data)
    short = data.test.iloc[[0]].copy()
    short["history_item_ids"] = [[3, 4]]
    before = model.score_batch(short)
    with torch.no_grad():
        model.model.item_emb.weight[N_ITEMS].normal_()
    after = model.score_batch(short)
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)


def test_exclude_history_masks_only_history_items(fitted, data):
    model, _ = fitted["gru4rec"]
    samples = data.test.iloc[:3].copy()
    samples["history_item_ids"] = [[5], [1, 2, 3], list(range(40, 40 + MAX_LEN))]
    plain = model.score_batch(samples)
    model.hp["exclude_history"] = True
    try:
        masked = model.score_batch(samples)
        ids, _ = model.recommend(samples, k=20)
    finally:
        model.hp["exclude_history"] = False
    for r, hist in enumerate(samples["history_item_ids"]):
        assert torch.isneginf(masked[r, hist]).all()
        keep = torch.ones(N_ITEMS, dtype=torch.bool)
        keep[hist] = False
        torch.testing.assert_close(masked[r, keep], plain[r, keep])
        assert not set(ids[r]) & set(hist)


def test_caser_fused_horizontal_equals_separate_convolutions():
    """The one-matmul horizontal layer computes Caser's L separate (h x d) convolutions + max-pool."""
    from latentrec.baselines.sequential import CaserModel

    torch.manual_seed(0)
    L, d, n_h, n_items = MAX_LEN, 8, 3, 30
    m = CaserModel(n_items, d, 0.0, L, n_h, n_v=2)
    hist = pad_histories([[1], [2, 3, 4], list(range(5, 5 + L)), [7, 8, 9, 10, 11, 12]], pad=n_items)
    valid = (hist != n_items).float()
    e = m.item_emb(hist) * valid.unsqueeze(-1)
    got = m.horizontal(e, valid)
    expected = []
    for h in range(1, L + 1):
        conv = torch.nn.Conv1d(d, n_h, h)
        with torch.no_grad():
            conv.weight.copy_(m.conv_h_weight[h - 1, :, L - h :, :].transpose(1, 2))
            conv.bias.copy_(m.conv_h_bias[h - 1])
        c = torch.relu(conv(e.transpose(1, 2)))  # [B, n_h, L-h+1], windows starting at j
        c = c * valid[:, None, h - 1 :]  # drop windows that end on padding
        expected.append(c.amax(dim=2))
    torch.testing.assert_close(got, torch.cat(expected, dim=1), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- cross-entropy protocol


@pytest.fixture(scope="module")
def fitted_ce(data):
    out = {}
    for family in MODELS:
        model = registry.build(family, {**_params(family), "loss": "ce"}, seed=7)
        out[family] = (model, model.fit(data))
    return out


@pytest.mark.parametrize("family", MODELS)
def test_ce_loss_falls_and_beats_mostpop(fitted_ce, data, mostpop_hr10, family):
    model, log = fitted_ce[family]
    assert log["params"]["loss"] == "ce"
    assert log["train_loss"][-1] < log["train_loss"][0]
    # An untrained model's full softmax loss is about log(n_items); training goes well below it.
    assert log["train_loss"][-1] < 0.7 * np.log(N_ITEMS)
    hr, _ = _hr10(model, data)
    assert hr > mostpop_hr10 + 0.3, (family, hr, mostpop_hr10)


@pytest.mark.parametrize("family", MODELS)
def test_ce_loss_equals_explicit_softmax(data, family):
    """batch_loss('ce') is -log softmax of the target over every item, with logits built by hand."""
    from latentrec.baselines.sequential import batch_loss

    rec = registry.build(family, {**_params(family), "loss": "ce", "max_epochs": 1}, seed=3)
    rec.fit(data)
    model = rec.model.eval()
    rows = data.train.iloc[:6]
    hist = pad_histories(rows["history_item_ids"], pad=N_ITEMS)
    target = torch.as_tensor(rows["item_id"].to_numpy(copy=True), dtype=torch.int64)
    got = batch_loss(model, hist, target, None, "ce")

    h = model.encode(hist)  # [6, d]
    w, b = model.output_weights()
    logits = torch.stack(
        [torch.stack([h[r] @ w[i] + (0 if b is None else b[i]) for i in range(N_ITEMS)]) for r in range(len(rows))]
    )
    by_hand = -torch.stack([logits[r, target[r]] - torch.logsumexp(logits[r], 0) for r in range(len(rows))]).mean()
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, target), rtol=1e-5, atol=1e-6)


def test_bce_is_the_default_and_unknown_loss_rejected():
    assert registry.build("sasrec").hp["loss"] == "bce"
    with pytest.raises(ValueError, match="loss must be one of"):
        registry.build("sasrec", {"loss": "softmax"})


def test_gru4rec_layers_and_sasrec_blocks_are_tunable():
    gru = registry.build("gru4rec", {"n_layers": 2})._build_model(N_ITEMS)
    assert gru.gru.num_layers == 2
    sas = registry.build("sasrec", {"n_layers": 3, "hidden": 16})._build_model(N_ITEMS)
    assert len(sas.blocks) == 3 and sas.item_emb.weight.shape == (N_ITEMS + 1, 16)


def test_ce_on_the_default_synthetic_dataset(tmp_path):
    """The default run's data (config.yaml's synthetic category, built raw -> split): SASRec-CE's
    full-softmax loss falls and it beats MostPop on the test rows."""
    from pathlib import Path

    import yaml

    from latentrec.data.build import build_from_raw
    from latentrec.data.synthetic import generate

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    ds_cfg = cfg["datasets"]["Synthetic_Music"]
    generate(tmp_path / "r.json.gz", tmp_path / "m.json.gz", **ds_cfg["synthetic"])
    ds, _ = build_from_raw(
        tmp_path / "r.json.gz", tmp_path / "m.json.gz", {**cfg["processing"], **ds_cfg["processing"]}
    )
    params = {**cfg["methods"]["SASRec-CE"]["params"], "max_epochs": 3, "hidden": 32}
    model = registry.build("sasrec", params, seed=0)
    log = model.fit(ds)
    assert log["params"]["loss"] == "ce"
    assert log["train_loss"][-1] < log["train_loss"][0] < np.log(ds.n_items) + 0.5
    pop = registry.build("mostpop")
    pop.fit(ds)

    def hr10(m):
        ids, _ = m.recommend(ds.test, 10)
        return float(row_metrics(hit_positions_by_id(ids, ds.test["item_id"].to_numpy()), ks=(10,))["HR@10"].mean())

    assert hr10(model) > hr10(pop) + 0.05


def test_caser_user_embedding_scores_train_users_only(data):
    """With `user_embedding` Caser scores against [z; P_u]: a train user's vector changes the scores
    of an identical history, every user without train rows shares the zero vector, and history
    masking still sees only the history (not the user column)."""
    model = registry.build("caser", {**_params("caser"), "user_embedding": True, "max_epochs": 3}, seed=7)
    log = model.fit(data)
    assert log["train_loss"][-1] < log["train_loss"][0]
    assert model.model.user_emb.num_embeddings == data.train["user_id"].nunique() + 1
    samples = data.test.iloc[:4].copy()
    samples["history_item_ids"] = [[1, 2, 3]] * 4
    samples["user_id"] = ["tr0", "tr1", "nobody", "te5"]
    scores = model.score_batch(samples)
    assert not torch.allclose(scores[0], scores[1])  # two train users, same history
    torch.testing.assert_close(scores[2], scores[3])  # both unseen: the zero user vector
    # The unseen row is z against the item vectors' first half (the user half contributes 0).
    hist = model._matrix(samples.iloc[2:3])
    assert hist.shape == (1, MAX_LEN + 1) and int(hist[0, 0]) == 0
    w, b = model.model.output_weights()
    z = model.model.encode(hist)[:, : w.shape[1] // 2]
    torch.testing.assert_close(scores[2], (z @ w[:, : w.shape[1] // 2].T + b)[0])
    model.hp["exclude_history"] = True
    try:
        masked = model.score_batch(samples.iloc[:1])
    finally:
        model.hp["exclude_history"] = False
    assert torch.isneginf(masked[0, [1, 2, 3]]).all() and torch.isinf(masked[0]).sum() == 3


def test_caser_user_embedding_beats_mostpop(data, mostpop_hr10):
    model = registry.build("caser", {**_params("caser"), "user_embedding": True}, seed=7)
    model.fit(data)
    assert _hr10(model, data)[0] > mostpop_hr10 + 0.3

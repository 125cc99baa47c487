"""AlphaRec: title embeddings from a (tiny) causal LM, the graph model learning, and the cached input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentrec.baselines import registry
from latentrec.baselines.alpharec import BipartiteGraph, title_embeddings
from latentrec.data.processed_io import SAMPLE_COLUMNS, ProcessedDataset, save_dataset
from latentrec.eval.metrics import hit_positions_by_id, row_metrics

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, N_GROUPS, LM_DIM = 200, 10, 24
FAST = {
    "lr": 1e-2,
    "hidden": 32,
    "mlp_hidden": 64,
    "batch_size": 256,
    "n_negatives": 64,
    "max_epochs": 15,
    "patience": 4,
}


def _rows(rng: np.random.Generator, n_users: int, prefix: str) -> pd.DataFrame:
    """Users with a taste for one group of 20 items (items g*20 .. g*20+19); 90% of picks in it.

    No sequential order inside a group: only co-occurrence (what a CF model sees) predicts the target.
    """
    recs = []
    for u in range(n_users):
        g = int(rng.integers(N_GROUPS))
        seq = [
            int(g * 20 + rng.integers(20)) if rng.random() < 0.9 else int(rng.integers(N_ITEMS))
            for _ in range(int(rng.integers(3, 9)))
        ]
        for t in range(1, len(seq)):  # sliding windows, as the processed splits
            recs.append(
                {
                    "user_id": f"{prefix}{u}",
                    "history_item_ids": seq[max(0, t - 10) : t],
                    "item_id": seq[t],
                    "history_ratings": None,
                    "rating": np.nan,
                    "history_timestamps": None,
                    "timestamp": pd.NA,
                }
            )
    return pd.DataFrame(recs, columns=SAMPLE_COLUMNS)


@pytest.fixture(scope="module")
def data() -> ProcessedDataset:
    rng = np.random.default_rng(5)
    items = pd.DataFrame(
        {
            "item_id": np.arange(N_ITEMS),
            "asin": [f"A{i}" for i in range(N_ITEMS)],
            "title": [f"album {i} of genre {i // 20}" for i in range(N_ITEMS)],
        }
    )
    ds = ProcessedDataset(
        items=items, train=_rows(rng, 600, "tr"), valid=_rows(rng, 60, "va"), test=_rows(rng, 60, "te")
    )
    ds.validate()
    return ds


@pytest.fixture(scope="module")
def lm() -> np.ndarray:
    """Stand-in language representations: random, carrying no group information at all."""
    return np.random.default_rng(0).normal(size=(N_ITEMS, LM_DIM)).astype(np.float32) * 3 + 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted(data, lm):
    model = registry.build("alpharec", {**FAST, "item_embeddings": lm}, seed=3)
    return model, model.fit(data)


def _hr10(model, ds) -> tuple[float, np.ndarray]:
    ids, _ = model.recommend(ds.test, 10)
    pos = hit_positions_by_id(ids, ds.test["item_id"].to_numpy())
    return float(row_metrics(pos, ks=(10,))["HR@10"].mean()), ids


def test_registered_and_needs_embeddings():
    assert "alpharec" in registry.families()
    with pytest.raises(ValueError, match="item_embeddings"):
        registry.build("alpharec", {})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        registry.build("alpharec", {"item_embeddings": np.zeros((2, 2)), "temperature": 0.1})


def test_wrong_embedding_shape_is_rejected(data):
    model = registry.build("alpharec", {**FAST, "item_embeddings": np.zeros((N_ITEMS - 1, 4))})
    with pytest.raises(ValueError, match=r"expected \[200, d\]"):
        model.fit(data)


def test_loss_falls_and_beats_mostpop(fitted, data):
    model, log = fitted
    assert log["train_loss"][-1] < 0.8 * log["train_loss"][0]
    assert log["best_valid_ndcg@10"] == max(log["valid_ndcg@10"])
    assert log["graph"]["items"] == N_ITEMS and log["graph"]["users"] == 600
    mostpop = registry.build("mostpop")
    mostpop.fit(data)
    hr, _ = _hr10(model, data)
    hr_pop, _ = _hr10(mostpop, data)
    # Group taste: 90% of targets lie in the history's group of 20 items, so HR@10 near 0.45 is
    # reachable; popularity is flat (about 0.05).
    assert hr > hr_pop + 0.2, (hr, hr_pop)


def test_reproducible_and_scores_are_per_row(fitted, data, lm):
    model, log = fitted
    again = registry.build("alpharec", {**FAST, "item_embeddings": lm}, seed=3)
    assert again.fit(data)["train_loss"] == log["train_loss"]
    np.testing.assert_array_equal(_hr10(model, data)[1], _hr10(again, data)[1])
    rows = data.test.iloc[:7]
    scores = model.score_batch(rows)
    assert scores.shape == (7, N_ITEMS)
    torch.testing.assert_close(scores[3:4], model.score_batch(rows.iloc[[3]]), rtol=1e-5, atol=1e-6)
    assert scores.abs().max() <= 1 + 1e-5  # cosine similarities


def test_fold_in_equals_lightgcn_on_a_graph_that_contains_the_user(fitted):
    """A history scored as a new node is the LightGCN user representation of that node, up to the
    node's own (ignored) effect on item degrees and on the item layers."""
    model, _ = fitted
    m = model.model
    with torch.no_grad():
        pre_i, layers = m.propagate()
        hist = torch.tensor([[N_ITEMS] * 7 + [4, 9, 150]])
        got = m.fold_in(hist, pre_i, layers)
        items = torch.tensor([4, 9, 150])
        deg = model.graph.deg_items[items].clamp(min=1)
        e0 = m.fc2(torch.nn.functional.leaky_relu(pre_i[items].mean(0)))
        expected = e0.clone()
        for layer in layers[:-1]:
            expected += (layer[items] / torch.sqrt(3 * deg)[:, None]).sum(0)
        expected /= m.n_layers + 1
    torch.testing.assert_close(got[0], expected, rtol=1e-5, atol=1e-6)


def test_graph_normalisation():
    # users 0,1; items 0,1,2; edges (0,0) (0,1) (1,1) (1,2), plus a duplicate (0,0)
    g = BipartiteGraph(np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 2, 0]), 2, 4, "cpu")
    assert g.n_edges == 4
    dense = g.ui.to_dense()
    expected = torch.tensor(
        [[1 / np.sqrt(2 * 1), 1 / np.sqrt(2 * 2), 0, 0], [0, 1 / np.sqrt(2 * 2), 1 / np.sqrt(2 * 1), 0]],
        dtype=torch.float32,
    )
    torch.testing.assert_close(dense, expected)
    torch.testing.assert_close(g.user_mean.to_dense().sum(1), torch.ones(2))
    assert g.deg_items.tolist() == [1, 2, 1, 0]  # item 3 has no train edge


def test_title_embeddings_of_a_tiny_llm(smollm2_tokenizer):
    from latentrec.llm.backbone import tiny_llama_like

    tok = smollm2_tokenizer
    model = tiny_llama_like(tok, hidden=32)
    titles = ["Abbey Road", "The Dark Side of the Moon (Remastered 2011 Edition)", "x", "Abbey Road"]
    emb = title_embeddings(model, tok, titles, batch_size=3)
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], emb[3])
    # Batching and padding do not change a title's embedding: each alone gives the same vector.
    for i, t in enumerate(titles):
        np.testing.assert_allclose(title_embeddings(model, tok, [t], batch_size=1)[0], emb[i], rtol=1e-4, atol=1e-5)
    # The mean over the title's tokens of the decoder's last hidden state.
    ids = torch.tensor([tok(titles[1])["input_ids"]])
    with torch.no_grad():
        h = model.get_decoder()(input_ids=ids).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(emb[1], h.numpy(), rtol=1e-4, atol=1e-5)


def test_cli_writes_the_embedding_cache_that_fit_predict_reads(smollm2_tokenizer, data, tmp_path):
    """`item-embeddings` writes the .npy the AlphaRec runs read; `fit-predict` takes its path."""
    from latentrec.llm.backbone import tiny_llama_like

    tok = smollm2_tokenizer
    model_dir = tmp_path / "tiny"
    tiny_llama_like(tok, hidden=16).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data_dir = tmp_path / "data"
    save_dataset(data, data_dir)
    cache = tmp_path / "_cache" / "title_embeddings_tiny.npy"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "latentrec", *args],
        env=env,
        check=True,  # noqa: E731
        capture_output=True,
        text=True,
    )
    run("item-embeddings", "--data", str(data_dir), "--model", str(model_dir), "--threads", "1", "--out", str(cache))
    emb = np.load(cache)
    assert emb.shape == (N_ITEMS, 16)
    assert (cache.with_suffix(".json")).exists()
    cfg = '{"family": "alpharec", "params": {"max_epochs": 2, "hidden": 8, "mlp_hidden": 16, "n_negatives": 16}}'
    run(
        "fit-predict",
        "--data",
        str(data_dir),
        "--dataset",
        "toy",
        "--method",
        "AlphaRec",
        "--cfg",
        cfg,
        "--threads",
        "1",
        "--item-embeddings",
        str(cache),
        "--out",
        str(tmp_path / "run"),
    )
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert len(preds) == len(data.test) and len(preds["pred_item_ids"].iloc[0]) == 10


def test_one_embedding_job_serves_every_alpharec_run(tmp_path):
    """The Snakemake DAG computes the title embeddings once per dataset, for all grid points and seeds."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "seeds: [0, 1]\n"
        "methods:\n  AlphaRec:\n    family: alpharec\n    grid: {tau: [0.1, 0.2], lr: [1.0e-3, 5.0e-4]}\n"
        "run_methods: [MostPop, AlphaRec]\n"
        "report: {baselines: [MostPop]}\n"
    )
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-n",
            "--configfile",
            str(cfg),
            "--forceall",
            "--quiet",
            "rules",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    counts = dict(
        line.split() for line in out.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert counts["item_title_embeddings"] == "1"
    assert counts["fit_grid_point"] == "8"  # 4 points x 2 seeds

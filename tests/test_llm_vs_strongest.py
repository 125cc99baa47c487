"""llm_vs_strongest: the strongest baseline per dataset and paired verdicts on shared test rows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from latentrec.io_utils import write_json
from latentrec.report.llm_vs_strongest import llm_vs_strongest

N = 400


def _run(root, dataset, method, seed, hits: np.ndarray) -> str:
    """A run whose per-row HR@10 is `hits` (NDCG@10 = hits / 2), as evaluate writes it."""
    folder = root / dataset / method / f"seed{seed}"
    folder.mkdir(parents=True)
    rows = pd.DataFrame({"row": np.arange(len(hits)), "HR@10": hits.astype(float), "NDCG@10": hits / 2.0})
    rows.to_parquet(folder / "rows.parquet", index=False)
    metrics = {"HR@10": float(rows["HR@10"].mean()), "NDCG@10": float(rows["NDCG@10"].mean())}
    write_json(
        {"dataset": dataset, "method": method, "seed": seed, "split": "test", "metrics": metrics},
        folder / "metrics.json",
    )
    return str(folder / "metrics.json")


@pytest.fixture()
def runs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for seed in (0, 1):
        paths.append(_run(tmp_path, "A", "MostPop", seed, (rng.random(N) < 0.05).astype(int)))
        strong = (rng.random(N) < 0.30).astype(int)
        paths.append(_run(tmp_path, "A", "SASRec", seed, strong))
        paths.append(_run(tmp_path, "A", "GoodLLM", seed, np.maximum(strong, rng.random(N) < 0.4).astype(int)))
        paths.append(_run(tmp_path, "A", "WeakLLM", seed, (rng.random(N) < 0.05).astype(int)))
        paths.append(_run(tmp_path, "A", "SameLLM", seed, np.roll(strong, 1)))
    return tmp_path, paths


CFG = {
    "baselines": ["MostPop", "SASRec"],
    "llm_methods": ["GoodLLM", "WeakLLM", "SameLLM"],
    "metrics": ["HR@10", "NDCG@10"],
    "primary_metric": "NDCG@10",
}


def test_strongest_baseline_and_verdicts(runs):
    _, paths = runs
    df, md = llm_vs_strongest(paths, CFG)
    assert set(df["baseline"]) == {"SASRec"}  # highest test mean NDCG@10 of the two baselines
    assert len(df) == 3 * 2
    v = df.set_index(["method", "metric"])["verdict"]
    assert v["GoodLLM", "HR@10"] == "yes" and v["GoodLLM", "NDCG@10"] == "yes"
    assert v["WeakLLM", "HR@10"] == "no (worse)"
    assert v["SameLLM", "HR@10"] == "no (n.s.)"
    assert "| A | GoodLLM | SASRec | HR@10 |" in md and "yes" in md
    assert (df["seeds"] == "0/0,1/1").all()


def test_p_value_is_the_paired_t_test_on_rows(runs):
    root, paths = runs
    df, _ = llm_vs_strongest(paths, CFG)
    ps = []
    for seed in (0, 1):
        a = pd.read_parquet(root / "A" / "GoodLLM" / f"seed{seed}" / "rows.parquet")["NDCG@10"]
        b = pd.read_parquet(root / "A" / "SASRec" / f"seed{seed}" / "rows.parquet")["NDCG@10"]
        ps.append(stats.ttest_rel(a, b).pvalue)
    row = df[(df.method == "GoodLLM") & (df.metric == "NDCG@10")].iloc[0]
    assert row["max_p"] == pytest.approx(max(ps))


def test_limited_llm_run_pairs_on_shared_rows_of_the_same_split(tmp_path):
    """An LLM run scored on the first 100 rows, kept under another dataset name for the same split."""
    rng = np.random.default_rng(1)
    base = (rng.random(N) < 0.2).astype(int)
    paths = [
        _run(tmp_path, "CDs", "SASRec", 0, base),
        _run(tmp_path, "CDs_cpu", "BIGRec", 0, (rng.random(100) < 0.02).astype(int)),
    ]
    cfg = dict(CFG, llm_methods=["BIGRec"], same_split={"CDs_cpu": "CDs"})
    df, _ = llm_vs_strongest(paths, cfg)
    row = df[df.metric == "HR@10"].iloc[0]
    assert row["dataset"] == "CDs_cpu" and row["baseline"] == "SASRec" and row["n_rows"] == 100
    assert row["baseline_mean"] == pytest.approx(base[:100].mean())
    # Without same_split the two datasets never meet: no row.
    assert llm_vs_strongest(paths, dict(cfg, same_split={}))[0].empty


def test_cli_writes_table(runs, tmp_path):
    _, paths = runs
    out = tmp_path / "tables"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "latentrec",
            "llm-vs-strongest",
            "--metrics",
            *paths,
            "--cfg",
            json.dumps(CFG),
            "--out-csv",
            str(out / "llm_vs_strongest.csv"),
            "--out-md",
            str(out / "llm_vs_strongest.md"),
        ],
        check=True,
    )
    assert "beats it?" in (out / "llm_vs_strongest.md").read_text()
    assert len(pd.read_csv(out / "llm_vs_strongest.csv")) == 6


def test_table1_shows_display_names_beside_the_paper_number(runs, tmp_path):
    """SASRec-CE is labelled "SASRec (CE)" in Table 1 and still meets the paper's SASRec row."""
    from latentrec.io_utils import write_yaml
    from latentrec.report.build import build_report

    root, _ = runs
    rng = np.random.default_rng(2)
    paths = [_run(root, "A", m, 0, (rng.random(N) < 0.3).astype(int)) for m in ("SASRec-CE", "SASRec-BCE")]
    for p in paths:  # Table 1 reads HR/NDCG@5 and their title-matched twins too
        m = json.loads(open(p).read())
        m["metrics"] = {f"{pre}{k}@{n}": 0.1 for pre in ("", "title_") for k in ("HR", "NDCG") for n in (5, 10)}
        write_json(m, p)
    stats_path = root / "A" / "data" / "stats.json"
    stats_path.parent.mkdir(parents=True)
    write_json(
        {"n_train": 1, "n_valid": 1, "n_test": 1, "n_items": 1, "n_users": 1, "mean_history_len": 1.0}, stats_path
    )
    write_yaml(
        {"latentr3_table1": {"A": {"SASRec": {"H@5": 0.05, "H@10": 0.1, "N@5": 0.04, "N@10": 0.05}}}},
        root / "paper.yaml",
    )
    cfg = {
        "paper_results": str(root / "paper.yaml"),
        "paper_names": {"SASRec-CE": "SASRec", "SASRec-BCE": "SASRec"},
        "display_names": {"SASRec-CE": "SASRec (CE)", "SASRec-BCE": "SASRec (paper protocol)"},
    }
    build_report(paths, [str(stats_path)], cfg, tmp_path / "tables")
    md = (tmp_path / "tables" / "table1.md").read_text()
    assert "| SASRec (CE) — by id | 0.1000 (0.0500, +100%)" in md  # SASRec's row is published matched by id
    assert "| SASRec (paper protocol) — by id |" in md and "SASRec-CE" not in md

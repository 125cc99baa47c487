"""Every paired t-test of the report goes through eval/significance.py: a method that beats another by the
same amount on every test row is a certain difference (p = 0), identical scores are none (p = 1); neither
is a missing p ("–"). Each test carries its minimum detectable effect, 0 where the differences have no
spread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentrec.report import flr, latentr3
from latentrec.report.common import load_runs
from latentrec.report.llm_vs_strongest import llm_vs_strongest
from latentrec.report.significance_table import significance_table

METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")
N = 10


def _run(root: Path, dataset: str, method: str, seed: int, shift: float) -> str:
    """Per-row scores that vary by row and seed, plus `shift` on every row (both matchings)."""
    d = root / dataset / method / f"seed{seed}"
    d.mkdir(parents=True)
    base = np.linspace(0.1, 0.5, N) + 0.01 * seed
    rows = pd.DataFrame(
        {"row": np.arange(N), **{m: base + shift for m in METRICS}, **{f"title_{m}": 2 * base + shift for m in METRICS}}
    )
    rows.to_parquet(d / "rows.parquet")
    metrics = {c: float(rows[c].mean()) for c in rows.columns if "@" in c}
    (d / "metrics.json").write_text(
        json.dumps({"dataset": dataset, "method": method, "seed": seed, "metrics": metrics})
    )
    return str(d / "metrics.json")


@pytest.fixture(params=[0.1, 0.0], ids=["constant_shift", "identical"])
def runs(request, tmp_path):
    """Ours beats the baseline by `shift` on every row of both seeds; the expected p of every test."""
    shift = request.param
    paths = [_run(tmp_path, "Toys", m, s, v) for m, v in (("BIGRec", 0.0), ("Ours", shift)) for s in (0, 1)]
    return paths, 0.0 if shift else 1.0


def test_latentr3_gains(runs):
    paths, p = runs
    df = latentr3.gains(load_runs(paths), {"Ours": "BIGRec"}, {})
    assert (df["p_title"] == p).all() and (df["p_id"] == p).all()
    assert (df["mde_title"] == 0).all() and (df["mde_id"] == 0).all()  # no spread: any difference is detected
    assert f"| {p:.2g} |" in latentr3.gains_markdown(df, "note")


def test_flr_table2(runs):
    paths, p = runs
    cfg = {"rows": {"BIGRec": "BIGRec", "Ours": "FLR"}, "method": "Ours", "baselines": ["BIGRec"]}
    _, tests = flr.table2(load_runs(paths), cfg, {})
    assert len(tests) == 4
    for match in ("title", "id"):
        assert (tests[f"p_rows_{match}"] == p).all() and (tests[f"p_seeds_{match}"] == p).all()
        assert (tests[f"mde_rows_{match}"] == 0).all() and (tests[f"mde_seeds_{match}"] == 0).all()


def test_significance_table(runs):
    paths, p = runs
    df, _ = significance_table(paths, {"baselines": ["BIGRec"]})
    assert (df["row_p"] == p).all() and (df["seed_p"] == p).all()
    assert (df["row_mde"] == 0).all() and (df["seed_mde"] == 0).all()


def test_llm_vs_strongest(runs):
    paths, p = runs
    df, _ = llm_vs_strongest(paths, {"baselines": ["BIGRec"], "llm_methods": ["Ours"]})
    assert (df["max_p"] == p).all() and (df["max_mde"] == 0).all()
    assert (df["verdict"] == ("yes" if p == 0 else "no (n.s.)")).all()

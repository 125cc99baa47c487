"""What every report module shares: the runs as a table, their per-row scores pooled over seeds, the paired
test of two methods on those rows, the number formats of the Markdown cells and the figure set-up."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from latentrec.eval.significance import mean_std, paired_ttest
from latentrec.io_utils import read_json

METRIC = "NDCG@10"  # the papers' headline metric: figures' y axis, the strongest-baseline choice

RUN_COLUMNS = ["dataset", "method", "seed", "metrics", "rows_path"]


# ------------------------------------------------------------------------------------------ runs
def load_runs(metrics_paths: list[str]) -> pd.DataFrame:
    """One row per run (dataset, method, seed, its metrics dict, the path of its per-row scores)."""
    recs = []
    for p in metrics_paths:
        m = read_json(p)
        recs.append({"dataset": m["dataset"], "method": m["method"], "seed": m["seed"],
                     "metrics": m["metrics"], "rows_path": str(Path(p).with_name("rows.parquet"))})
    return pd.DataFrame(recs, columns=RUN_COLUMNS)


def method_runs(runs: pd.DataFrame, dataset: str, method: str) -> pd.DataFrame:
    """The runs (one per seed) of `method` on `dataset`."""
    return runs[(runs.dataset == dataset) & (runs.method == method)]


def seed_mean(runs: pd.DataFrame, dataset: str, method: str, metric: str = METRIC) -> tuple[float, float]:
    """Mean and std over seeds of a run metric (NaN, NaN where the method did not run on the dataset)."""
    g = method_runs(runs, dataset, method)
    return mean_std(m[metric] for m in g.metrics) if len(g) else (math.nan, math.nan)


def pooled_rows(runs: pd.DataFrame, dataset: str, method: str) -> pd.DataFrame:
    """The per-row scores of every seed of `method` on `dataset`, one frame with a `seed` column."""
    g = method_runs(runs, dataset, method)
    return pd.concat([pd.read_parquet(p).assign(seed=s) for p, s in zip(g.rows_path, g.seed)], ignore_index=True)


def paired_pooled_rows(runs: pd.DataFrame, dataset: str, method: str, other: str) -> pd.DataFrame:
    """The test rows both methods scored on the same seed, `other`'s columns suffixed `_b`."""
    return pooled_rows(runs, dataset, method).merge(pooled_rows(runs, dataset, other), on=["seed", "row"],
                                                    suffixes=("", "_b"))


def paired_rows_p(both: pd.DataFrame, metric: str) -> float:
    """Two-sided paired t-test p of `metric` against `metric`_b over the rows of `both` (paired_pooled_rows)."""
    return paired_ttest(both[metric], both[f"{metric}_b"], metric, "row")["p"]


# --------------------------------------------------------------------------------------- formats
def format_p(p) -> str:
    """A p-value to two significant digits, or "–" where there is none (one seed, no shared row)."""
    return "–" if p is None or pd.isna(p) else f"{p:.2g}"


def format_num(x, fmt: str = ".4f") -> str:
    """A metric value (`fmt`: its format), or "–" where there is none."""
    return "–" if x is None or pd.isna(x) else format(x, fmt)


def format_gain(x) -> str:
    """A relative gain as a signed percentage, or "–" where there is none."""
    return format_num(x, "+.1%")


# --------------------------------------------------------------------------------------- figures
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (clusters and CI have no display), imported when a
    figure is drawn so that reading the tables does not load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

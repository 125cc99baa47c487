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
        recs.append(
            {
                "dataset": m["dataset"],
                "method": m["method"],
                "seed": m["seed"],
                "metrics": m["metrics"],
                "rows_path": str(Path(p).with_name("rows.parquet")),
            }
        )
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
    return pooled_rows(runs, dataset, method).merge(
        pooled_rows(runs, dataset, other), on=["seed", "row"], suffixes=("", "_b")
    )


def paired_rows_test(both: pd.DataFrame, metric: str) -> dict:
    """Two-sided paired t-test of `metric` against `metric`_b over the rows of `both` (paired_pooled_rows):
    eval/significance.paired_ttest's result (p, mde, ...)."""
    return paired_ttest(both[metric], both[f"{metric}_b"], metric, "row")


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


MDE_NOTE = (
    "MDE: the minimum detectable effect of that paired test, the smallest true mean difference it finds "
    "with 80 % power at α = 0.05 (two-sided), from the paired differences' sd and their number "
    "(eval/significance.py); in parentheses relative to the baseline's mean. A p above 0.05 says little "
    "about effects smaller than the MDE."
)


def format_mde(mde, baseline=None) -> str:
    """A minimum detectable effect in metric units, with its share of `baseline` (the compared-against mean)
    in parentheses where that is positive; "–" where there is none (fewer than two pairs)."""
    if mde is None or pd.isna(mde):
        return "–"
    rel = f" ({mde / baseline:.0%})" if baseline is not None and not pd.isna(baseline) and baseline > 0 else ""
    return f"{mde:.4f}{rel}"


# --------------------------------------------------------------------------------------- figures
def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (clusters and CI have no display), imported when a
    figure is drawn so that reading the tables does not load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

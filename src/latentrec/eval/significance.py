"""Paired significance tests between runs evaluated on the same test rows.

Two kinds, both two-sided paired t-tests (scipy.stats.ttest_rel) through `paired_ttest`, the one test every
report table uses:
  per row    one run of A against one run of B, paired by test row (the per-row metric values);
  per seed   the seed-level aggregates of A against those of B, paired by seed (as the FLR paper does).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def paired_rows(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> dict:
    if len(a) != len(b) or not (a["row"].to_numpy() == b["row"].to_numpy()).all():
        raise ValueError("paired test needs both runs on the same test rows in the same order")
    x, y = a[metric].to_numpy(float), b[metric].to_numpy(float)
    return paired_ttest(x, y, metric, "row")


def paired_seeds(a: dict[int, float], b: dict[int, float], metric: str) -> dict:
    seeds = sorted(set(a) & set(b))
    x = np.array([a[s] for s in seeds], float)
    y = np.array([b[s] for s in seeds], float)
    return paired_ttest(x, y, metric, "seed") | {"seeds": seeds}


def paired_ttest(x, y, metric: str = "", unit: str = "row") -> dict:
    """Two-sided paired t-test of x against y (equal-length sequences, pair i = x[i], y[i]): n, the means,
    t, p and the mean difference; a constant difference gives the test's limit instead of NaN (below)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    out = {"metric": metric, "unit": unit, "n": n, "mean_a": float(x.mean()) if n else math.nan,
           "mean_b": float(y.mean()) if n else math.nan}
    diff = x - y
    if n < 2:  # one pair: no variance to test against
        out.update(t=math.nan, p=math.nan)
    elif np.allclose(diff, diff[0], rtol=0, atol=1e-12):
        # The differences have no variance, so t is infinite or undefined. The limit of the test is
        # used instead of NaN: a constant non-zero shift is certain (t = ±inf, p = 0), identical
        # runs are no evidence of a difference (t = 0, p = 1).
        d = float(diff[0])
        out.update(t=math.copysign(math.inf, d) if d else 0.0, p=0.0 if d else 1.0)
    else:
        res = stats.ttest_rel(x, y)
        out.update(t=float(res.statistic), p=float(res.pvalue))
    out["mean_diff"] = float(diff.mean()) if n else math.nan
    return out


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(list(values), float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

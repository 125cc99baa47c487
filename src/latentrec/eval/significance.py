"""Paired significance tests between runs evaluated on the same test rows.

Two kinds, both two-sided paired t-tests (scipy.stats.ttest_rel) through `paired_ttest`, the one test every
report table uses:
  per row    one run of A against one run of B, paired by test row (the per-row metric values);
  per seed   the seed-level aggregates of A against those of B, paired by seed (as the FLR paper does).

Beside every p, the minimum detectable effect (`mde`): the smallest true mean difference that the same
test (two-sided, alpha 0.05) finds with 80 % power, given the paired differences' sample sd s and the
number of pairs n. Under a true difference delta, t = mean(d) / (s / sqrt(n)) follows a noncentral t
with n - 1 degrees of freedom and noncentrality delta * sqrt(n) / s; the power is
    P(|t| > c) = 1 - F(c; n - 1, nc) + F(-c; n - 1, nc),   c = t_{1 - alpha/2, n - 1},
with F the noncentral t's cdf, and the MDE is the delta where that equals 0.8 (solved exactly; about
(c + t_{0.8, n - 1}) * s / sqrt(n)). A "not significant" p with an MDE above the effect of interest
means the test could not have seen that effect.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats


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


def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable |mean difference| of a two-sided paired t-test at `alpha` with `power`, from the
    paired differences' sd and their number n (module docstring). 0 for sd 0 (a constant difference is
    certain, as in `paired_ttest`); NaN for n < 2 or an undefined sd."""
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def short(nc: float) -> float:  # power at noncentrality nc, less the wanted power
        lower = stats.nct.cdf(-crit, df, nc)  # < alpha / 2 for nc >= 0; scipy gives NaN where it underflows
        return stats.nct.sf(crit, df, nc) + (lower if math.isfinite(lower) else 0.0) - power

    hi = crit + stats.norm.ppf(power) + 1.0
    while short(hi) < 0:  # the power rises with nc: widen until the root is bracketed
        hi *= 2
    return float(optimize.brentq(short, 0.0, hi, xtol=1e-10)) * sd / math.sqrt(n)


def paired_ttest(x, y, metric: str = "", unit: str = "row") -> dict:
    """Two-sided paired t-test of x against y (equal-length sequences, pair i = x[i], y[i]): n, the means,
    t, p, the mean difference, the differences' sd and the test's minimum detectable effect (`mde`); a
    constant difference gives the test's limit instead of NaN (below)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    out = {
        "metric": metric,
        "unit": unit,
        "n": n,
        "mean_a": float(x.mean()) if n else math.nan,
        "mean_b": float(y.mean()) if n else math.nan,
    }
    diff = x - y
    constant = n >= 2 and np.allclose(diff, diff[0], rtol=0, atol=1e-12)
    if n < 2:  # one pair: no variance to test against
        out.update(t=math.nan, p=math.nan)
    elif constant:
        # The differences have no variance, so t is infinite or undefined. The limit of the test is
        # used instead of NaN: a constant non-zero shift is certain (t = ±inf, p = 0), identical
        # runs are no evidence of a difference (t = 0, p = 1).
        d = float(diff[0])
        out.update(t=math.copysign(math.inf, d) if d else 0.0, p=0.0 if d else 1.0)
    else:
        res = stats.ttest_rel(x, y)
        out.update(t=float(res.statistic), p=float(res.pvalue))
    out["mean_diff"] = float(diff.mean()) if n else math.nan
    out["sd_diff"] = 0.0 if constant else float(diff.std(ddof=1)) if n > 1 else math.nan
    out["mde"] = mde(out["sd_diff"], n)
    return out


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(list(values), float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

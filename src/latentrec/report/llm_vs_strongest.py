"""Does each LLM method beat the strongest traditional baseline? Paired t-tests on the same test rows.

Per dataset, the strongest traditional baseline is the one of `baselines` with the highest mean test
value of `primary_metric` over its seeds. Choosing it on test rather than validation is deliberate:
it is the hardest comparator an LLM method can face (a baseline picked on validation can only be as
strong on test or weaker), so "beats" here cannot come from a lucky choice of opponent. It also
works for every baseline, MostPop included, which has no validation-driven training.

Every LLM method (family llm or latent) is then paired with that baseline row by row: only the test
rows both were scored on (an LLM run may be limited to the first N rows), on each seed both ran
(if they share none, each LLM seed is paired with the baseline's first seed). Verdict per metric:
  yes        the LLM method is higher and p < alpha on every paired seed;
  no (worse) it is lower and p < alpha on every paired seed;
  no (n.s.)  anything else: no significant difference on at least one seed, or mixed signs.

`same_split` maps a dataset name to another that holds the same split (e.g. a CPU-sized LLM run of
the CDs split kept under its own name), so the LLM runs of the first meet the baselines of the second.
"""

from __future__ import annotations

import math

import pandas as pd

from latentrec.eval.significance import mean_std, paired_rows
from latentrec.report.common import MDE_NOTE, format_mde, format_p, load_runs

VERDICTS = ("yes", "no (worse)", "no (n.s.)")


def strongest_baseline(runs: pd.DataFrame, baselines: list[str], metric: str) -> tuple[str, float] | None:
    means = {m: mean_std(g["metrics"].map(lambda d: d[metric]))[0] for m, g in runs.groupby("method") if m in baselines}
    if not means:
        return None
    best = max(means, key=means.get)
    return best, means[best]


def _shared_rows(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = sorted(set(a["row"]) & set(b["row"]))
    return (a.set_index("row").loc[rows].reset_index(), b.set_index("row").loc[rows].reset_index())


def verdict(tests: list[dict], alpha: float) -> str:
    if tests and all(t["mean_diff"] > 0 and t["p"] < alpha for t in tests):
        return "yes"
    if tests and all(t["mean_diff"] < 0 and t["p"] < alpha for t in tests):
        return "no (worse)"
    return "no (n.s.)"


def llm_vs_strongest(metrics_paths: list[str], cfg: dict) -> tuple[pd.DataFrame, str]:
    """cfg: baselines, llm_methods, metrics, primary_metric, alpha (0.05), same_split ({})."""
    metrics = cfg.get("metrics", ["HR@10", "NDCG@10"])
    primary = cfg.get("primary_metric", "NDCG@10")
    alpha = float(cfg.get("alpha", 0.05))
    llm_methods = set(cfg.get("llm_methods", []))
    runs = load_runs(metrics_paths)
    runs["split"] = runs["dataset"].map(lambda d: cfg.get("same_split", {}).get(d, d))
    out = []
    for split, d in runs.groupby("split", sort=False):
        best = strongest_baseline(d, cfg.get("baselines", []), primary)
        if best is None:
            continue
        base, _ = best
        b = d[d.method == base].set_index("seed")
        for (dataset, method), g in d.groupby(["dataset", "method"], sort=False):
            if method not in llm_methods:
                continue
            a = g.set_index("seed")
            pairs = [(s, s) for s in sorted(set(a.index) & set(b.index))] or [
                (s, min(b.index)) for s in sorted(a.index)
            ]
            for metric in metrics:
                tests = []
                for sa, sb in pairs:
                    ra, rb = _shared_rows(
                        pd.read_parquet(a.at[sa, "rows_path"]), pd.read_parquet(b.at[sb, "rows_path"])
                    )
                    tests.append(paired_rows(ra, rb, metric))
                ps, mdes = [t["p"] for t in tests], [t["mde"] for t in tests]
                out.append(
                    {
                        "dataset": dataset,
                        "split": split,
                        "method": method,
                        "baseline": base,
                        "baseline_chosen_by": f"test mean {primary}",
                        "metric": metric,
                        "n_rows": tests[0]["n"],
                        "seeds": ",".join(f"{sa}/{sb}" for sa, sb in pairs),
                        "mean": sum(t["mean_a"] for t in tests) / len(tests),
                        "baseline_mean": sum(t["mean_b"] for t in tests) / len(tests),
                        "max_p": max(ps) if not any(math.isnan(p) for p in ps) else math.nan,
                        # the least sensitive seed's test, as max_p is the least significant one's
                        "max_mde": max(mdes) if not any(math.isnan(m) for m in mdes) else math.nan,
                        "verdict": verdict(tests, alpha),
                    }
                )
    df = pd.DataFrame(out)
    return df, _markdown(df, primary, alpha)


def _markdown(df: pd.DataFrame, primary: str, alpha: float) -> str:
    lines = [
        "## Does each LLM method beat the strongest traditional baseline?",
        "",
        f"Strongest baseline per dataset: highest test mean {primary} over seeds (the hardest "
        "comparator). Paired t-tests on the test rows both methods were scored on, per seed "
        f"(LLM seed / baseline seed); 'yes' needs a higher mean and p < {alpha} on every seed.",
        "",
        MDE_NOTE + " Here the largest over the seeds.",
        "",
        "| dataset | LLM method | strongest baseline | metric | rows | seeds | LLM mean | baseline mean | max p "
        "| MDE | beats it? |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.dataset} | {r.method} | {r.baseline} | {r.metric} | {r.n_rows:,} | {r.seeds} | "
            f"{r.mean:.4f} | {r.baseline_mean:.4f} | {format_p(r.max_p)} | "
            f"{format_mde(r.max_mde, r.baseline_mean)} | {r.verdict} |"
        )
    if df.empty:
        lines.append("| – | no LLM method and baseline ran on the same dataset | | | | | | | | | |")
    return "\n".join(lines) + "\n"

"""Every method against the strongest baseline of its dataset: paired t-tests per row and per seed."""

from __future__ import annotations

import pandas as pd

from latentrec.eval.significance import mean_std, paired_rows, paired_seeds
from latentrec.report.common import MDE_NOTE, format_mde, format_p, load_runs


def strongest(runs: pd.DataFrame, candidates: list[str], metric: str) -> str | None:
    means = {
        m: mean_std(g["metrics"].map(lambda d: d[metric]))[0] for m, g in runs.groupby("method") if m in candidates
    }
    return max(means, key=means.get) if means else None


def significance_table(metrics_paths: list[str], cfg: dict) -> tuple[pd.DataFrame, str]:
    metrics = cfg.get("metrics", ["HR@10", "NDCG@10"])
    primary = cfg.get("primary_metric", "NDCG@10")
    runs = load_runs(metrics_paths)
    out = []
    for dataset, d in runs.groupby("dataset", sort=False):
        base = strongest(d, cfg.get("baselines", []), primary)
        if base is None:
            continue
        b = d[d.method == base].set_index("seed")
        for method, g in d.groupby("method", sort=False):
            if method == base:
                continue
            a = g.set_index("seed")
            seeds = sorted(set(a.index) & set(b.index))
            for metric in metrics:
                row = {"dataset": dataset, "method": method, "baseline": base, "metric": metric}
                # Per-row test on each shared seed; the table shows the first seed's and the count of p<0.05.
                per_row = [
                    paired_rows(pd.read_parquet(a.at[s, "rows_path"]), pd.read_parquet(b.at[s, "rows_path"]), metric)
                    for s in seeds
                ]
                row["row_test_seed"] = seeds[0] if seeds else None
                row["row_t"] = per_row[0]["t"] if per_row else None
                row["row_p"] = per_row[0]["p"] if per_row else None
                row["row_mde"] = per_row[0]["mde"] if per_row else None
                row["row_sig_seeds"] = sum(r["p"] < 0.05 for r in per_row)
                seed_test = paired_seeds(
                    {s: a.at[s, "metrics"][metric] for s in seeds},
                    {s: b.at[s, "metrics"][metric] for s in seeds},
                    metric,
                )
                row.update(
                    mean=seed_test["mean_a"],
                    baseline_mean=seed_test["mean_b"],
                    seed_t=seed_test["t"],
                    seed_p=seed_test["p"],
                    seed_mde=seed_test["mde"],
                    n_seeds=seed_test["n"],
                )
                out.append(row)
    df = pd.DataFrame(out)
    return df, _markdown(df)


def _markdown(df: pd.DataFrame) -> str:
    lines = [
        "## Paired t-tests against the strongest baseline",
        "",
        "Per row: test rows paired, first seed shown; per seed: seed-level aggregates paired (needs ≥ 2 seeds).",
        "",
        MDE_NOTE,
        "",
        "| dataset | method | baseline | metric | ours | baseline | p (rows) | MDE (rows) | seeds p<0.05 "
        "| p (seeds) | MDE (seeds) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.dataset} | {r.method} | {r.baseline} | {r.metric} | {r.mean:.4f} | "
            f"{r.baseline_mean:.4f} | {format_p(r.row_p)} | {format_mde(r.row_mde, r.baseline_mean)} | "
            f"{r.row_sig_seeds}/{r.n_seeds} | {format_p(r.seed_p)} | "
            f"{format_mde(r.seed_mde, r.baseline_mean)} |"
        )
    if df.empty:
        lines.append("| – | no method besides the baselines ran | | | | | | | | | |")
    return "\n".join(lines) + "\n"

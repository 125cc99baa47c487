"""Results tables: ours (mean ± std over seeds) beside the published numbers, as Markdown, CSV and LaTeX."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from latentrec.eval.significance import mean_std
from latentrec.io_utils import atomic_path

# Paper metric keys (paper_results.yaml) → our metric columns.
PAPER_METRICS = {"H@5": "HR@5", "H@10": "HR@10", "N@5": "NDCG@5", "N@10": "NDCG@10"}


def collect(records: list[dict], paper: dict, paper_names: dict[str, str], match: str = "id") -> pd.DataFrame:
    """Long table: one row per (dataset, method, metric) with ours and the paper's value.

    records: {"dataset", "method", "seed", "metrics": {...}} per run. match: "id" or "title".
    """
    prefix = "" if match == "id" else "title_"
    runs = pd.DataFrame(records)
    out = []
    for (dataset, method), g in runs.groupby(["dataset", "method"], sort=False):
        published = paper.get(dataset, {}).get(paper_names.get(method, method), {})
        for pkey, ours_key in PAPER_METRICS.items():
            mean, std = mean_std(m[prefix + ours_key] for m in g["metrics"])
            pub = published.get(pkey)
            out.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "metric": pkey,
                    "match": match,
                    "ours_mean": mean,
                    "ours_std": std,
                    "n_seeds": len(g),
                    "paper": pub,
                    "rel_diff": (mean - pub) / pub if pub else math.nan,
                }
            )
    return pd.DataFrame(out)


def _cell(r, with_paper: bool) -> str:
    s = f"{r.ours_mean:.4f}"
    if r.n_seeds > 1:
        s += f" ± {r.ours_std:.4f}"
    if with_paper:
        s += f" ({r.paper:.4f}, {r.rel_diff:+.0%})" if r.paper is not None and not pd.isna(r.paper) else " (–)"
    return s


def to_markdown(long: pd.DataFrame, title: str) -> str:
    lines = [f"## {title}", "", "Cells: ours mean ± std over seeds (published value, relative difference).", ""]
    for dataset, g in long.groupby("dataset", sort=False):
        metrics = list(dict.fromkeys(g["metric"]))
        lines += [f"### {dataset}", "", "| method | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for method, gm in g.groupby("method", sort=False):
            cells = [_cell(r, True) for r in gm.itertuples()]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def to_latex(long: pd.DataFrame) -> str:
    """One tabular: methods as rows, dataset × metric as columns, ours mean (± std) per cell."""
    datasets = list(dict.fromkeys(long["dataset"]))
    metrics = list(dict.fromkeys(long["metric"]))
    cols = "l" + "c" * (len(datasets) * len(metrics))
    head1 = " & ".join([""] + [f"\\multicolumn{{{len(metrics)}}}{{c}}{{{d.replace('_', ' ')}}}" for d in datasets])
    head2 = " & ".join(["Method"] + metrics * len(datasets))
    body = []
    for method in dict.fromkeys(long["method"]):
        cells = [method.replace("_", r"\_")]
        for d in datasets:
            for m in metrics:
                r = long[(long.dataset == d) & (long.method == method) & (long.metric == m)]
                cells.append(_cell(next(r.itertuples()), False).replace("±", r"$\pm$") if len(r) else "--")
        body.append(" & ".join(cells) + r" \\")
    return "\n".join(
        [f"\\begin{{tabular}}{{{cols}}}", r"\toprule", head1 + r" \\", head2 + r" \\", r"\midrule", *body,
         r"\bottomrule", r"\end{tabular}", ""]
    )


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)

"""The report stage: results tables (Markdown, CSV, LaTeX), dataset statistics and figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from latentrec.io_utils import read_json, read_yaml
from latentrec.report.figures import plot_against_paper
from latentrec.report.tables import (
    MATCH_NOTE,
    collect,
    no_published_note,
    to_latex,
    to_markdown,
    unpublished,
    write_csv,
    write_text,
)

STATS_COLUMNS = ["dataset", "n_train", "n_valid", "n_test", "n_items", "n_users", "mean_history_len"]
PAPER_STATS = {"train": "n_train", "valid": "n_valid", "test": "n_test", "items": "n_items"}


def _display(long: pd.DataFrame, display_names: dict[str, str]) -> pd.DataFrame:
    """Row labels: a method's display name (e.g. "SASRec (CE)") where it has one, its key otherwise."""
    if long.empty or not display_names:
        return long
    return long.assign(method=long["method"].map(lambda m: display_names.get(m, m)))


def _labelled(long: pd.DataFrame) -> pd.DataFrame:
    """Each row's label says the matching of its cells: "SASRec — by id", "BIGRec — by title"."""
    if long.empty:
        return long
    return long.assign(method=long["method"] + " — by " + long["match"])


def build_report(metrics_paths: list[str], stats_paths: list[str], cfg: dict, out_dir: Path) -> None:
    paper = read_yaml(cfg["paper_results"]) if cfg.get("paper_results") else {}
    names = cfg.get("paper_names", {})
    records = [read_json(p) for p in metrics_paths]
    order = cfg.get("method_order") or list(dict.fromkeys(r["method"] for r in records))
    records.sort(key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order), r["seed"]))

    table = cfg.get("table", {"paper_key": "latentr3_table1", "name": "table1", "title": "LatentR3 Table 1"})
    published = paper.get(table["paper_key"], {})
    shown = cfg.get("display_names", {})
    by_id = _display(collect(records, published, names, match="id"), shown)
    by_title = _display(collect(records, published, names, match="title"), shown)
    if cfg.get("test_limit"):
        table = dict(table, title=f"{table['title']} (first {cfg['test_limit']} test rows only)")
    stem = out_dir / table["name"]
    write_csv(pd.concat([by_id, by_title]), stem.with_suffix(".csv"))
    # Like with like: each published value sits beside ours under the matching it was published under (item
    # id for the traditional baselines, title string for the LLM rows); ours under the other matching follows
    # in its own table. Every row's label says its matching.
    as_published = _labelled(_display(collect(records, published, names, match="published"), shown))
    md = f"{MATCH_NOTE}\n\n" + to_markdown(
        as_published,
        f"{table['title']} — ours under each row's published matching, beside the published values",
        published,
    )
    md += "\n" + to_markdown(
        _labelled(_display(collect(records, published, names, match="other"), shown)),
        f"{table['title']} — ours under the other matching",
        published,
        with_paper=False,
    )
    write_text(md, stem.with_suffix(".md"))
    write_text(to_latex(by_id), stem.with_suffix(".tex"))
    plot_against_paper(
        as_published,
        out_dir / f"{table['name']}_ndcg10.png",
        metric="N@10",
        ours_label="ours (each row's published matching)",
    )

    stats = pd.DataFrame(
        [
            {
                "dataset": Path(p).parent.parent.name if Path(p).parent.name == "data" else Path(p).parent.name,
                **read_json(p),
            }
            for p in stats_paths
        ]
    )
    pub_stats = paper.get("datasets", {})
    for key, col in PAPER_STATS.items():
        stats[f"paper_{col}"] = stats["dataset"].map(lambda d: pub_stats.get(d, {}).get(key))
    write_csv(stats, out_dir / "dataset_stats.csv")
    lines = [
        "## Dataset statistics (LatentR3 Table 3 layout; published values in parentheses)",
        "",
        "| dataset | train | valid | test | items | users | mean history |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in stats.to_dict("records"):

        def cell(col):
            pub = r.get(f"paper_{col}")
            return f"{r[col]:,}" + (f" ({int(pub):,})" if pub is not None and not pd.isna(pub) else "")

        lines.append(
            f"| {r['dataset']} | {cell('n_train')} | {cell('n_valid')} | {cell('n_test')} | "
            f"{cell('n_items')} | {r['n_users']:,} | {r['mean_history_len']:.2f} |"
        )
    missing = unpublished(stats["dataset"], published=pub_stats) if len(stats) else []
    if missing:
        lines += ["", *(no_published_note(d) for d in missing)]
    write_text("\n".join(lines) + "\n", out_dir / "dataset_stats.md")

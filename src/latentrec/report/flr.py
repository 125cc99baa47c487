"""The FLR paper's tables and figures, from the runs, beside the published values (paper_results.yaml flr_*).

- Table 2: every method on every dataset (mean ± std over seeds), FLR against the strongest baseline of
  its dataset (picked on each baseline's published matching) with paired t-tests (over seeds, as the paper;
  and over test rows pooled over seeds), each with its minimum detectable effect;
- Table 3: the regulariser combinations (Games, Toys); Table 4: LatentR3, FLR, FLR + LR-GRPO, FLR + FLR-GRPO;
  Tables 2-4 print ours under both matchings, the published value beside ours under the matching it was
  published under (item id for the traditional baselines, title string for the LLM rows); each matching
  has its own t-tests;
- Figure 4: cosine similarity between the K factors (mean over users) of each `factors.methods` model
  (without and with the regularisers, before and after FLR-GRPO), with the mean |Pearson correlation| of
  factor pairs (the paper: 0.44 -> 0.03), and the disentanglement score DS = (1 - S_avg) * A_max;
- Figure 6: each factor's attention over one user's history items, one panel per `factors.methods` model,
  on `factors.figure6_dataset` (the paper's Video Games by default);
- Figure 7: popular vs unpopular targets, FLR against LatentR3; Figure 8: NDCG@10 against K;
- Figure 9: inference seconds per user (BIGRec, LatentR3, FLR, CoT) from the `time-decode` runs.

Methods (and files) absent from a run are skipped: every table and figure is still written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from latentrec.eval.significance import paired_seeds
from latentrec.io_utils import read_json
from latentrec.report.common import (
    MDE_NOTE,
    METRIC,
    format_gain,
    format_mde,
    format_num,
    format_p,
    load_runs,
    method_runs,
    paired_pooled_rows,
    paired_rows_test,
    pyplot,
    seed_mean,
)
from latentrec.report.escape import md_cell, md_text
from latentrec.report.latentr3 import popularity, popularity_figure, sweep_figure, sweep_points
from latentrec.report.tables import (
    MATCH_NOTE,
    MATCHES,
    PAPER_METRICS,
    metric_key,
    no_published_note,
    published_match,
    unpublished,
    write_csv,
    write_text,
)

TABLE4_COLUMNS = ["LatentR3", "FLR", "FLR + LR-GRPO", "FLR + FLR-GRPO"]  # the published column order
FIGURE6_DATASET = "Video_Games"  # the paper's Figure 6; `report.flr.factors.figure6_dataset` picks another


def _have(runs: pd.DataFrame, dataset: str, method: str) -> bool:
    return bool(len(method_runs(runs, dataset, method)))


def _cell(mean, std, paper=None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–" if paper is None else f"– ({paper:.4f})"
    s = f"{mean:.4f} ± {std:.4f}"
    return s + (f" ({paper:.4f})" if paper is not None and not pd.isna(paper) else "")


def _datasets(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(runs.dataset)) if len(runs) else []


def _both(runs: pd.DataFrame, dataset: str, method: str, metric: str) -> dict:
    """{title_mean, title_std, id_mean, id_std} of `metric` over the method's seeds: ours under both matchings."""
    out = {}
    for match in MATCHES:
        out[f"{match}_mean"], out[f"{match}_std"] = seed_mean(runs, dataset, method, metric_key(metric, match))
    return out


def _head(metrics) -> list[str]:
    """Column headers of the metric cells: each metric matched by title, then by id."""
    return [f"{m} ({match})" for match in MATCHES for m in metrics]


def _cells(g: pd.DataFrame, marks=(), published: str = "title") -> list[str]:
    """One row's metric cells, in `_head` order: ours by title, then by id; the published value in
    parentheses beside ours under its matching `published` († where the metric is in `marks`)."""
    return [
        _cell(getattr(r, f"{match}_mean"), getattr(r, f"{match}_std"), r.paper if match == published else None)
        + (" †" if match == published and r.metric in marks else "")
        for match in MATCHES
        for r in g.itertuples()
    ]


# ----------------------------------------------------------------------------------------- Table 2
TABLE2_COLUMNS = [
    "dataset",
    "row",
    "method",
    "metric",
    "n_seeds",
    "published_match",
    "title_mean",
    "title_std",
    "paper",
    "id_mean",
    "id_std",
]
TESTS_COLUMNS = ["dataset", "method", "baseline", "baseline_picked_by", "metric", "n_seeds", "paired_rows"] + [
    f"{c}_{match}"
    for match in MATCHES
    for c in ("ours", "baseline", "improvement", "p_seeds", "mde_seeds", "p_rows", "mde_rows")
]


def strongest_as_published(runs: pd.DataFrame, dataset: str, candidates: list[str], rows: dict[str, str]):
    """(method, matching) of the candidate with the highest mean N@10 over seeds, each candidate scored under
    the matching of its published row (`rows`: method -> the paper's row; item id for the traditional
    baselines, title for the LLM rows), as the paper compares its published values; None if none ran."""
    means = {}
    for b in candidates:
        if _have(runs, dataset, b):
            match = published_match(rows.get(b, b))
            means[b] = (seed_mean(runs, dataset, b, metric_key(METRIC, match))[0], match)
    if not means:
        return None
    best = max(means, key=lambda b: means[b][0])
    return best, means[best][1]


def table2(runs: pd.DataFrame, cfg: dict, paper: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long table of every row method, FLR-vs-strongest-baseline tests), ours under both matchings. The
    strongest baseline is chosen by N@10 under each baseline's published matching (`strongest_as_published`),
    and tested against under each matching."""
    rows, ours, baselines = cfg.get("rows", {}), cfg.get("method"), cfg.get("baselines", [])
    out, tests = [], []
    for dataset in _datasets(runs):
        for method, name in rows.items():
            if not _have(runs, dataset, method):
                continue
            for pkey, metric in PAPER_METRICS.items():
                n = int(((runs.dataset == dataset) & (runs.method == method)).sum())
                out.append(
                    {
                        "dataset": dataset,
                        "row": name,
                        "method": method,
                        "metric": pkey,
                        "n_seeds": n,
                        "published_match": published_match(name),
                        **_both(runs, dataset, method, metric),
                        "paper": paper.get(dataset, {}).get(name, {}).get(pkey),
                    }
                )
        d = runs[runs.dataset == dataset]
        best = strongest_as_published(runs, dataset, [b for b in baselines if b != ours], rows)
        if ours is None or best is None or not _have(runs, dataset, ours):
            continue
        base, picked = best
        a, b = d[d.method == ours].set_index("seed"), d[d.method == base].set_index("seed")
        seeds = sorted(set(a.index) & set(b.index))
        pooled = paired_pooled_rows(runs, dataset, ours, base)
        for pkey, metric in PAPER_METRICS.items():
            t = {
                "dataset": dataset,
                "method": ours,
                "baseline": base,
                "baseline_picked_by": f"N@10 ({picked})",
                "metric": pkey,
                "n_seeds": len(seeds),
                "paired_rows": len(pooled),
            }
            for match in MATCHES:
                key = metric_key(metric, match)
                st = paired_seeds(
                    {s: a.at[s, "metrics"][key] for s in seeds}, {s: b.at[s, "metrics"][key] for s in seeds}, key
                )
                rt = paired_rows_test(pooled, key)
                t.update(
                    {
                        f"ours_{match}": st["mean_a"],
                        f"baseline_{match}": st["mean_b"],
                        f"improvement_{match}": st["mean_a"] / st["mean_b"] - 1 if st["mean_b"] else math.nan,
                        f"p_seeds_{match}": st["p"],
                        f"mde_seeds_{match}": st["mde"],
                        f"p_rows_{match}": rt["p"],
                        f"mde_rows_{match}": rt["mde"],
                    }
                )
            tests.append(t)
    return pd.DataFrame(out, columns=TABLE2_COLUMNS), pd.DataFrame(tests, columns=TESTS_COLUMNS)


def _impossible_published(cells: pd.DataFrame) -> list[str]:
    """The N@K whose published value exceeds the published H@K of the same row: impossible with one
    relevant item per test row (NDCG@K = 1/log2(1 + rank) <= 1 = HR@K for a hit), so a typo."""
    paper = dict(zip(cells.metric, cells.paper))
    return [
        f"N@{k}"
        for k in (5, 10)
        if paper.get(f"N@{k}") is not None
        and paper.get(f"H@{k}") is not None
        and not pd.isna(paper[f"N@{k}"])
        and not pd.isna(paper[f"H@{k}"])
        and paper[f"N@{k}"] > paper[f"H@{k}"]
    ]


def table2_markdown(df: pd.DataFrame, tests: pd.DataFrame, note: str, published=None) -> str:
    """`published`: the paper's Table 2 by dataset; datasets absent from it get a line saying so."""
    lines = [
        "## FLR Table 2: mean ± std over seeds (published value in parentheses beside ours under the row's "
        "published matching)",
        "",
        note,
        "",
        MATCH_NOTE,
        "",
    ]
    for dataset, g in df.groupby("dataset", sort=False) if len(df) else []:
        head = _head(dict.fromkeys(g["metric"]))
        lines += [
            f"### {dataset}",
            "",
            "| row (our method) | seeds | published by | " + " | ".join(head) + " |",
            "|---|---|---|" + "---|" * len(head),
        ]
        typos = []
        for (name, method), gm in g.groupby(["row", "method"], sort=False):
            impossible, match = _impossible_published(gm), published_match(name)
            lines.append(
                f"| {md_cell(name)} ({method}) | {gm.n_seeds.iloc[0]} | {match} | "
                + " | ".join(_cells(gm, impossible, match))
                + " |"
            )
            typos += [f"{md_text(name)} {m}" for m in impossible]
        if typos:
            lines += [
                "",
                f"† Published as printed, though impossible: with one relevant item NDCG@K ≤ HR@K, and "
                f"the paper's {', '.join(typos)} exceeds its HR@K (a typo in the paper, kept unchanged).",
            ]
        if unpublished([dataset], g, published):
            lines += ["", no_published_note(dataset)]
        lines.append("")
    cols = [
        f"{c} ({match})"
        for match in MATCHES
        for c in ("FLR", "baseline", "improvement", "p over seeds", "MDE over seeds", "p over rows", "MDE over rows")
    ]
    lines += [
        "### FLR against the strongest baseline (by N@10 under each baseline's published matching, among "
        "the baselines present)",
        "",
        "Paired two-sided t-tests under each matching: over seeds (the paper's test; needs ≥ 2 seeds) and "
        "over test rows pooled over seeds.",
        "",
        MDE_NOTE,
        "",
        "| dataset | baseline | picked by | metric | seeds | " + " | ".join(cols) + " |",
        "|---|---|---|---|---|" + "---|" * len(cols),
    ]
    for r in tests.to_dict("records"):
        cells = [
            c
            for match in MATCHES
            for c in (
                format_num(r[f"ours_{match}"]),
                format_num(r[f"baseline_{match}"]),
                format_gain(r[f"improvement_{match}"]),
                format_p(r[f"p_seeds_{match}"]),
                format_mde(r[f"mde_seeds_{match}"], r[f"baseline_{match}"]),
                format_p(r[f"p_rows_{match}"]),
                format_mde(r[f"mde_rows_{match}"], r[f"baseline_{match}"]),
            )
        ]
        lines.append(
            f"| {r['dataset']} | {r['baseline']} | {r['baseline_picked_by']} | {r['metric']} | "
            f"{r['n_seeds']} | " + " | ".join(cells) + " |"
        )
    if tests.empty:
        lines.append("| – | FLR or every baseline is absent from this run |" + " |" * (3 + len(cols)))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- Tables 3, 4
def table3(runs: pd.DataFrame, rows: dict[str, str], datasets: list[str], paper: dict) -> pd.DataFrame:
    """The regulariser combinations; published values are [Games x 4, Toys x 4] per combination."""
    out = []
    for method, combo in rows.items():
        for i, dataset in enumerate(datasets):
            if not _have(runs, dataset, method):
                continue
            for j, (pkey, metric) in enumerate(PAPER_METRICS.items()):
                pub = paper.get(combo)
                out.append(
                    {
                        "regularisers": combo,
                        "method": method,
                        "dataset": dataset,
                        "metric": pkey,
                        **_both(runs, dataset, method, metric),
                        "paper": pub[4 * i + j] if pub and len(pub) > 4 * i + j else None,
                    }
                )
    return pd.DataFrame(
        out,
        columns=[
            "regularisers",
            "method",
            "dataset",
            "metric",
            "title_mean",
            "title_std",
            "paper",
            "id_mean",
            "id_std",
        ],
    )


def table4(runs: pd.DataFrame, columns: list[str], paper: dict) -> pd.DataFrame:
    out = []
    for dataset in _datasets(runs):
        for i, method in enumerate(columns):
            if not _have(runs, dataset, method):
                continue
            for pkey, metric in PAPER_METRICS.items():
                pub = paper.get(dataset, {}).get(pkey)
                out.append(
                    {
                        "dataset": dataset,
                        "column": TABLE4_COLUMNS[i] if i < 4 else method,
                        "method": method,
                        "metric": pkey,
                        **_both(runs, dataset, method, metric),
                        "paper": pub[i] if pub and len(pub) > i else None,
                    }
                )
    return pd.DataFrame(
        out, columns=["dataset", "column", "method", "metric", "title_mean", "title_std", "paper", "id_mean", "id_std"]
    )


def grid_markdown(
    df: pd.DataFrame,
    title: str,
    group: str,
    row: str,
    note: str,
    published=None,
    empty: str = "(none of these methods ran)",
) -> str:
    """`published`: the datasets the paper reports for this table (with `group` "dataset", those absent get
    a line saying so); None: a dataset none of whose cells has a published value gets that line."""
    lines = [
        f"## {title} (mean ± std over seeds; published value in parentheses beside ours matched by title)",
        "",
        note,
        "",
        MATCH_NOTE,
        "",
    ]
    if df.empty:
        return "\n".join(lines + [empty, ""])
    for key, g in df.groupby(group, sort=False):
        head = _head(dict.fromkeys(g["metric"]))
        lines += [f"### {md_text(key)}", "", f"| {row} | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for (name, method), gm in g.groupby([row, "method"], sort=False):
            lines.append(f"| {md_cell(name)} ({method}) | " + " | ".join(_cells(gm)) + " |")
        if group == "dataset" and unpublished([key], g, published):
            lines += ["", no_published_note(key)]
        lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- factor analyses
def _parts(path: str) -> tuple[str, str, int]:
    """(dataset, method, seed) of results/{dataset}/{method}/seed{n}/<file>."""
    p = Path(path).parts
    return p[-4], p[-3], int(p[-2].removeprefix("seed"))


def factor_stats(npz: dict) -> dict:
    """Mean cosine matrix [K, K] of the factors over users, the mean |cos| and mean |Pearson r| over factor
    pairs, A_max (each factor's largest share of its history attention, mean over factors and users) and
    DS = (1 - S_avg) * A_max with S_avg the mean |cos|."""
    f = npz["factors"].astype(np.float64)  # [N, K, d]
    k = f.shape[1]
    unit = f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    cos = np.einsum("nkd,nld->nkl", unit, unit)
    centred = f - f.mean(-1, keepdims=True)
    centred /= np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-12)
    corr = np.einsum("nkd,nld->nkl", centred, centred)
    off = ~np.eye(k, dtype=bool)
    s_avg = float(np.abs(cos[:, off]).mean()) if k > 1 else math.nan
    items = npz["item_attention"]  # [N, K, H], NaN past a user's history
    share = items / np.maximum(np.nansum(items, -1, keepdims=True), 1e-12)
    a_max = float(np.nanmax(share, -1).mean()) if np.isfinite(share).any() else math.nan
    return {
        "cos": cos.mean(0),
        "S_avg": s_avg,
        "abs_corr": float(np.abs(corr[:, off]).mean()) if k > 1 else math.nan,
        "A_max": a_max,
        "DS": (1 - s_avg) * a_max if k > 1 else math.nan,
        "users": int(f.shape[0]),
        "K": k,
    }


def _ink(rgba) -> str:
    """Annotation colour readable on a cell of colour `rgba`: white on dark cells, black on light ones."""
    r, g, b = rgba[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"


def _annotate(ax, im, values: np.ndarray, fmt: str, fontsize: float = 7) -> None:
    """Each cell's value written on the heatmap `im`, in a colour chosen by the cell's luminance."""
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(
                    j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize, color=_ink(im.cmap(im.norm(v)))
                )


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """`text` wrapped to lines that fit `width_in` inches at `fontsize` points (about 0.55 em per character)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(12, int(width_in * 72 / (0.55 * fontsize)))))


def _ellipsize(text: str, n: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def factor_figure(stats: list[dict], path: Path) -> None:
    """Figure 4: one panel per dataset (rows) and model label (columns, e.g. without / with the constraints,
    before / after FLR-GRPO): the mean K x K cosine similarity of its factors."""
    plt = pyplot()
    datasets = list(dict.fromkeys(s["dataset"] for s in stats)) or [None]
    labels = list(dict.fromkeys(s["label"] for s in stats)) or [None]
    cell = {}
    for s in stats:
        cell.setdefault((s["dataset"], s["label"]), s)  # one panel per model and dataset (the first seed's)
    width = max(5.0, 3.6 * len(labels))  # one panel still leaves room for the figure title
    fig, axes = plt.subplots(len(datasets), len(labels), figsize=(width, 3.6 * len(datasets)), squeeze=False)
    for i, dataset in enumerate(datasets):
        for j, label in enumerate(labels):
            ax, s = axes[i][j], cell.get((dataset, label))
            if s is None:
                ax.text(
                    0.5,
                    0.5,
                    "no FLR factors in this run" if not stats else _wrap(f"{dataset}: {label}: no factors", 3.0, 8),
                    ha="center",
                    va="center",
                    fontsize=8,
                )
                ax.set_axis_off()
                continue
            im = ax.imshow(s["cos"], vmin=-1, vmax=1, cmap="RdBu_r")
            k = s["cos"].shape[0]
            ax.set_xticks(range(k), [f"F{i + 1}" for i in range(k)], fontsize=8)
            ax.set_yticks(range(k), [f"F{i + 1}" for i in range(k)], fontsize=8)
            _annotate(ax, im, s["cos"], ".2f", fontsize=7 if k <= 6 else 5)
            ax.set_title(
                _wrap(f"{s['dataset']}: {s['label']}", 3.2, 8) + f"\n({s['method']}) avg |corr| {s['abs_corr']:.2f}",
                fontsize=8,
            )
            cb = fig.colorbar(im, ax=ax, fraction=0.046)
            cb.set_label("cosine similarity", fontsize=8)
            cb.ax.tick_params(labelsize=7)
    fig.suptitle(
        _wrap(
            "Cosine similarity between factors (mean over test users; paper: avg |corr| 0.44 -> 0.03)", width - 0.4, 9
        ),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attention_figure(panels: list[tuple[str, dict]], meta: dict | None, user: int, dataset, path: Path) -> None:
    """Figure 6: one user's history items (rows, in history order) against the factors (columns) of each
    model in `panels` ((label, factors npz): e.g. before and after FLR-GRPO), side by side on one colour
    scale; colour = the factor's attention on the item's title tokens. The rest of the factor's attention
    (on the prompt outside the titles) would swamp the per-item differences: it is left out of the colour
    scale and written under each factor instead."""
    plt = pyplot()
    panels = [(label, z) for label, z in panels if z is not None and user < len(z["item_attention"])]
    if not panels or meta is None:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.text(0.5, 0.5, "no FLR factors in this run", ha="center", va="center")
        ax.set_axis_off()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    titles = list(meta["history_titles"][user])
    h = len(titles)
    atts = [np.asarray(z["item_attention"][user], dtype=float)[:, :h].T for _, z in panels]  # [H, K] each
    ks = [a.shape[1] for a in atts]
    vmax = max([float(np.nanmax(a)) for a in atts if a.size and np.isfinite(a).any()] + [1e-12])
    widths = [max(2.2, 0.7 * k + 0.5) for k in ks]
    width = 3.2 + sum(widths) + 1.0  # item labels, the panels, the colour bar
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(width, max(3.4, 0.32 * h + 2.6)),
        squeeze=False,
        sharey=True,
        gridspec_kw={"width_ratios": widths},
        layout="constrained",
    )
    ims = []
    for j, ((label, z), att, ax) in enumerate(zip(panels, atts, axes[0])):
        k = att.shape[1]
        im = ax.imshow(att, aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ims.append(im)
        _annotate(ax, im, att, ".3f", fontsize=7 if k <= 6 else 6)
        if j == 0:  # numbered by history position: labels are unique even where titles repeat or share a prefix
            ax.set_yticks(range(h), [f"{i + 1}. {_ellipsize(t)}" for i, t in enumerate(titles)], fontsize=8)
            ax.set_ylabel("history item (oldest first)", fontsize=8)
        else:
            ax.tick_params(axis="y", labelleft=False)
        ax.set_xticks(
            range(k),
            [
                f"F{i + 1}\nα {a:.2f}\nrest {r:.2f}"
                for i, (a, r) in enumerate(zip(z["alpha"][user], np.asarray(z["other_attention"][user], float)))
            ],
            fontsize=8,
        )
        ax.set_title(_wrap(label, widths[j] - 0.1, 8), fontsize=8)
    fig.supxlabel(
        _wrap(
            "factor (α: its weight; rest: its attention outside the history titles, not on the colour scale)",
            width - 0.5,
            8,
        ),
        fontsize=8,
    )
    fig.suptitle(
        _wrap(
            f"{dataset}: each factor's attention over test user {user}'s history "
            f"(target: {_ellipsize(meta['target_titles'][user])})",
            width - 0.5,
            9,
        ),
        fontsize=9,
    )
    cb = fig.colorbar(ims[0], ax=list(axes[0]), fraction=0.05, pad=0.02)  # one scale: panels compare directly
    cb.set_label("attention on the item's title", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ K, timing
def k_figure(runs: pd.DataFrame, n_factors: dict, path: Path) -> pd.DataFrame:
    df = sweep_points(runs, {d: n_factors.get(d) or {} for d in _datasets(runs)}, "K").drop_duplicates(["dataset", "K"])
    sweep_figure(
        df, "K", "number of factors K", "Factors K (the paper: best K 3 on CDs, 4 on Games)", path, xticks=[1, 2, 3, 4]
    )
    return df


def timing(paths: list[str]) -> pd.DataFrame:
    out = []
    for p in paths:
        dataset, method, seed = _parts(p)
        t = read_json(p)
        g = t.get("generation_config", {})
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "seed": seed,
                "seconds_per_user": t["mean"],
                "std": t["std"],
                "repeats": t["repeats"],
                "rows": t["rows"],
                "num_beams": g.get("num_beams"),
                "batch_size": g.get("batch_size"),
                "reasoning_tokens": t.get("mean_reasoning_tokens"),
                "device": t.get("device_name", t.get("device")),
            }
        )
    return pd.DataFrame(
        out,
        columns=[
            "dataset",
            "method",
            "seed",
            "seconds_per_user",
            "std",
            "repeats",
            "rows",
            "num_beams",
            "batch_size",
            "reasoning_tokens",
            "device",
        ],
    )


def timing_figure(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    datasets = list(dict.fromkeys(df.dataset)) or ["(no timings)"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        g = df[df.dataset == dataset]
        single = np.array([_single(r) for r in g["repeats"]], dtype=bool)
        std = pd.to_numeric(g["std"], errors="coerce").to_numpy(dtype=float)
        bars = ax.bar(range(len(g)), g["seconds_per_user"])
        spread = ~single & np.isfinite(std)
        if spread.any():  # error bars only where there were repeats to spread
            ax.errorbar(
                np.arange(len(g))[spread],
                g["seconds_per_user"].to_numpy(dtype=float)[spread],
                yerr=std[spread],
                fmt="none",
                ecolor="black",
                capsize=3,
            )
        for bar, one in zip(bars, single):
            if one:  # one repeat: no spread to draw
                ax.annotate(
                    "n = 1",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.margins(y=0.12)
        ax.set_xticks(range(len(g)), [f"{m}\n(beam {b})" for m, b in zip(g.method, g.num_beams)], fontsize=7)
        ax.set_ylabel("seconds per user")
        ax.set_title(f"{dataset} ({g.device.iloc[0] if len(g) else ''})", fontsize=8)
    fig.suptitle("Inference time per user", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _single(repeats) -> bool:
    """One timed repeat (or an unknown count): there is no spread to show."""
    return repeats is None or pd.isna(repeats) or int(repeats) <= 1


def _seconds(mean, std, repeats) -> str:
    if _single(repeats):
        return f"{mean:.4f} (n = 1)"
    return f"{mean:.4f}" if std is None or pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def timing_markdown(df: pd.DataFrame) -> str:
    lines = [
        "## FLR Figure 9: inference seconds per user (mean ± std over repeats; n = 1: one repeat, no std)",
        "",
        "| dataset | method | beams | batch | users | repeats | s/user | × first method | reasoning tokens | device |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, g in df.groupby("dataset", sort=False):
        ref = g.seconds_per_user.iloc[0]
        for r in g.itertuples():
            rt = "–" if r.reasoning_tokens is None or pd.isna(r.reasoning_tokens) else f"{r.reasoning_tokens:.1f}"
            lines.append(
                f"| {dataset} | {r.method} | {r.num_beams} | {r.batch_size} | {r.rows} | {r.repeats} | "
                f"{_seconds(r.seconds_per_user, r.std, r.repeats)} | {r.seconds_per_user / ref:.2f} | {rt} | "
                f"{r.device} |"
            )
    if df.empty:
        lines.append(
            "| – | no timings in this run (the default times nothing; config/demo_full.yaml does) | | | | | | | | |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- build
def build(
    metrics_paths: list[str],
    data_dirs: dict[str, str],
    factor_paths: list[str],
    timing_paths: list[str],
    cfg: dict,
    paper_all: dict,
    out_dir: Path,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = load_runs(metrics_paths)
    note = (
        f"Scored on the first {cfg['test_limit']} test rows only."
        if cfg.get("test_limit")
        else "Scored on the full test split."
    )

    t2, tests = table2(runs, cfg.get("table2", {}), paper_all.get("flr_table2", {}))
    write_csv(t2, out_dir / "flr_table2.csv")
    write_csv(tests, out_dir / "flr_table2_tests.csv")
    write_text(table2_markdown(t2, tests, note, paper_all.get("flr_table2", {})), out_dir / "flr_table2.md")

    t3cfg = cfg.get("table3", {})
    paper3 = paper_all.get("flr_table3_regularizer_ablation", {})
    t3 = table3(runs, t3cfg.get("rows", {}), t3cfg.get("datasets", []), paper3)
    write_csv(t3, out_dir / "flr_table3.csv")
    t3sets = t3cfg.get("datasets", [])
    published3 = {d for i, d in enumerate(t3sets) if any(len(v or []) > 4 * i for v in paper3.values())}
    write_text(
        grid_markdown(
            t3,
            "FLR Table 3: regulariser combinations",
            "dataset",
            "regularisers",
            note,
            published3,
            empty=f"(none of these methods ran on this table's datasets: {', '.join(t3sets) or '–'})",
        ),
        out_dir / "flr_table3.md",
    )
    t4 = table4(runs, cfg.get("table4", []), paper_all.get("flr_table4_grpo", {}))
    write_csv(t4, out_dir / "flr_table4.csv")
    write_text(
        grid_markdown(t4, "FLR Table 4: RL on FLR", "dataset", "column", note, paper_all.get("flr_table4_grpo", {})),
        out_dir / "flr_table4.md",
    )

    # Factors: Figure 4 (similarity), disentanglement, Figure 6 (attention over one user's history), for
    # every `factors.methods` model (e.g. without / with the constraints, before / after FLR-GRPO).
    fcfg = cfg.get("factors", {})
    labels = fcfg.get("methods", {})
    published = paper_all.get("flr_hyperparameters", {}).get("disentanglement_corr", {})
    stats, first = [], {}
    for p in sorted(
        factor_paths,
        key=lambda x: (_parts(x)[0], list(labels).index(_parts(x)[1]) if _parts(x)[1] in labels else 99, _parts(x)[2]),
    ):
        dataset, method, seed = _parts(p)
        with np.load(p) as z:
            npz = {k: z[k] for k in z.files}
        meta = json.loads(Path(p).with_suffix(".json").read_text())
        s = factor_stats(npz)
        stats.append({**s, "dataset": dataset, "method": method, "seed": seed, "label": labels.get(method, method)})
        first.setdefault((dataset, method), (npz, meta))
    factor_figure(stats, out_dir / "flr_fig4_factor_similarity.png")
    dis = pd.DataFrame(
        [{k: v for k, v in s.items() if k != "cos"} for s in stats],
        columns=["dataset", "method", "label", "seed", "users", "K", "S_avg", "abs_corr", "A_max", "DS"],
    )
    write_csv(dis, out_dir / "flr_disentanglement.csv")
    lines = [
        "## FLR factor disentanglement (Figure 4 numbers; DS = (1 − S_avg) · A_max)",
        "",
        f"Published mean |corr| between factors: {published.get('unconstrained', '–')} without the "
        f"constraints, {published.get('with_constraints', '–')} with them.",
        "",
        "| dataset | method | factors | users | K | S_avg (mean abs cos) | mean abs corr | A_max | DS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.dataset} | {r.method} | {md_cell(r.label)} | {r.users} | {r.K} | {r.S_avg:.3f} | {r.abs_corr:.3f} | "
        f"{r.A_max:.3f} | {r.DS:.3f} |"
        for r in dis.itertuples()
    ]
    if dis.empty:
        lines.append("| – | no FLR factors in this run | | | | | | | |")
    write_text("\n".join(lines) + "\n", out_dir / "flr_disentanglement.md")
    # Figure 6: on `figure6_dataset` (the paper's) where it has factors, else on the first dataset with
    # factors of the first listed model (the figure says so); every listed model there.
    wanted = fcfg.get("figure6_dataset", FIGURE6_DATASET)
    main = next((m for m in labels if (wanted, m) in first), None)
    dataset = wanted if main else None
    if main is None:
        main = next((m for m in labels if any(m == fm for _, fm in first)), None)
        dataset = next((d for d, fm in first if fm == main), None)
    shown = dataset if dataset in (None, wanted) else f"{dataset} ({wanted} has no factors in this run)"
    ordered = [m for m in labels if (dataset, m) in first] + [m for d, m in first if d == dataset and m not in labels]
    attention_figure(
        [(f"{labels.get(m, m)} ({m})", first[(dataset, m)][0]) for m in ordered],
        first[(dataset, main)][1] if main else None,
        int(fcfg.get("user", 0)),
        shown,
        out_dir / "flr_fig6_factor_attention.png",
    )

    pop = popularity(runs, cfg.get("popularity_methods", []), data_dirs, cfg.get("popular_fraction", 0.2))
    write_csv(pop, out_dir / "flr_fig7_popularity.csv")
    popularity_figure(pop, out_dir / "flr_fig7_popularity.png")
    k_figure(runs, cfg.get("n_factors", {}), out_dir / "flr_fig8_factors_k.png").pipe(
        write_csv, out_dir / "flr_fig8_factors_k.csv"
    )
    tm = timing(timing_paths)
    order = {m: i for i, m in enumerate(cfg.get("timing", {}).get("methods", []))}
    tm = tm.sort_values(["dataset", "method"], key=lambda c: c.map(order) if c.name == "method" else c, kind="stable")
    write_csv(tm, out_dir / "flr_fig9_inference_time.csv")
    write_text(timing_markdown(tm), out_dir / "flr_fig9_inference_time.md")
    timing_figure(tm, out_dir / "flr_fig9_inference_time.png")

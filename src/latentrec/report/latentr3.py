"""LatentR3's own tables and figures, from the runs, beside the published numbers.

- gains: each "+LatentR3" method against its backbone (BIGRec, D3): relative gain in ours and in the
  paper, with a paired t-test on the same test rows (pooled over seeds);
- ablation (paper Table 2): our variants under the paper's row names;
  both tables put ours matched by title (the published values' matching) beside the published values, and
  ours matched by item id in their own columns, each matching with its own t-test and its minimum
  detectable effect;
- Figure 2: popular (top 20 % of items by train frequency) against unpopular test targets;
- Figure 3: HR@10 and NDCG@10 against the reasoning length N (N = 0 is the backbone without latent);
- Figure 4 (appendix F): the original GRPO against LR-GRPO (NDCG@10, HR@10, RL seconds per step), only
  where `grpo_compare` names an original-GRPO method;
- cost (no paper figure): decoding seconds per user of each method, and RL seconds per optimiser step.
Methods that are not the paper's (e.g. the Gaussian-policy LR-GRPO) carry their display name, which says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

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
    pooled_rows,
    pyplot,
    seed_mean,
)
from latentrec.report.escape import md_cell
from latentrec.report.tables import (
    MATCH_NOTE,
    MATCHES,
    PAPER_METRICS,
    metric_key,
    no_published_note,
    unpublished,
    write_csv,
    write_text,
)

GAINS_COLUMNS = [
    "dataset",
    "method",
    "backbone",
    "metric",
    "ours_title",
    "backbone_title",
    "gain_title",
    "paper",
    "paper_backbone",
    "paper_gain",
    "p_title",
    "mde_title",
    "ours_id",
    "backbone_id",
    "gain_id",
    "p_id",
    "mde_id",
    "paired_rows",
]


def gains(runs: pd.DataFrame, pairs: dict[str, str], paper: dict) -> pd.DataFrame:
    """Each method against its backbone under both matchings: `*_title` (the published values' matching) and
    `*_id`, each with its paired t-test on the same test rows (pooled over seeds)."""
    out = []
    for dataset in dict.fromkeys(runs.dataset):
        for method, backbone in pairs.items():
            have = set(runs[runs.dataset == dataset].method)
            if method not in have or backbone not in have:
                continue
            both = paired_pooled_rows(runs, dataset, method, backbone)
            for pkey, metric in PAPER_METRICS.items():
                pub = paper.get(dataset, {})
                p_ours, p_base = pub.get(method, {}).get(pkey), pub.get(backbone, {}).get(pkey)
                row = {
                    "dataset": dataset,
                    "method": method,
                    "backbone": backbone,
                    "metric": pkey,
                    "paper": p_ours,
                    "paper_backbone": p_base,
                    "paper_gain": p_ours / p_base - 1 if p_ours and p_base else math.nan,
                    "paired_rows": len(both),
                }
                for match in MATCHES:
                    key = metric_key(metric, match)
                    ours, base = seed_mean(runs, dataset, method, key)[0], seed_mean(runs, dataset, backbone, key)[0]
                    test = paired_rows_test(both, key)
                    row.update(
                        {
                            f"ours_{match}": ours,
                            f"backbone_{match}": base,
                            f"gain_{match}": ours / base - 1 if base else math.nan,
                            f"p_{match}": test["p"],
                            f"mde_{match}": test["mde"],
                        }
                    )
                out.append(row)
    return pd.DataFrame(out, columns=GAINS_COLUMNS)


def gains_markdown(df: pd.DataFrame, note: str, published=None, display_names: dict | None = None) -> str:
    """`published`: the paper's Table 1 by dataset; datasets absent from it get a line saying so.
    `display_names`: row labels of methods (e.g. one that says it is not the paper's method)."""
    shown = display_names or {}
    lines = [
        "## LatentR3 against its backbone (relative gain; paired t-tests on the same test rows, per matching)",
        "",
        note,
        "",
        MATCH_NOTE,
        "",
        MDE_NOTE,
        "",
        "| dataset | method | vs | metric | ours (title) | backbone (title) | ours gain (title) | paper gain (title) "
        "| p (title) | MDE (title) | ours (id) | backbone (id) | ours gain (id) | p (id) | MDE (id) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        cells = [
            format_num(r.ours_title),
            format_num(r.backbone_title),
            format_gain(r.gain_title),
            format_gain(r.paper_gain),
            format_p(r.p_title),
            format_mde(r.mde_title, r.backbone_title),
            format_num(r.ours_id),
            format_num(r.backbone_id),
            format_gain(r.gain_id),
            format_p(r.p_id),
            format_mde(r.mde_id, r.backbone_id),
        ]
        lines.append(
            f"| {r.dataset} | {shown.get(r.method, r.method)} | {r.backbone} | {r.metric} | " + " | ".join(cells) + " |"
        )
    if len(df):
        missing = unpublished(df["dataset"], df.rename(columns={"paper_gain": "paper"}), published)
        lines += ["", *(no_published_note(d) for d in missing)] if missing else []
    return "\n".join(lines) + "\n"


ABLATION_COLUMNS = ["dataset", "variant", "method", "metric", "title_mean", "title_std", "paper", "id_mean", "id_std"]


def ablation(runs: pd.DataFrame, rows: dict[str, str], paper: dict) -> pd.DataFrame:
    """Ours per variant and metric under both matchings (`title_*`, the published values' matching; `id_*`)."""
    out = []
    for dataset in dict.fromkeys(runs.dataset):
        for method, name in rows.items():
            if not len(method_runs(runs, dataset, method)):
                continue
            for pkey, metric in PAPER_METRICS.items():
                row = {
                    "dataset": dataset,
                    "variant": name,
                    "method": method,
                    "metric": pkey,
                    "paper": paper.get(dataset, {}).get(name, {}).get(pkey),
                }
                for match in MATCHES:
                    row[f"{match}_mean"], row[f"{match}_std"] = seed_mean(
                        runs, dataset, method, metric_key(metric, match)
                    )
                out.append(row)
    return pd.DataFrame(out, columns=ABLATION_COLUMNS)


def ablation_markdown(df: pd.DataFrame, note: str, published=None) -> str:
    lines = [
        "## LatentR3 ablation (paper Table 2 layout; published value in parentheses beside ours matched by title)",
        "",
        note,
        "",
        MATCH_NOTE,
        "",
    ]
    for dataset, g in df.groupby("dataset", sort=False):
        metrics = list(dict.fromkeys(g["metric"]))
        head = [f"{m} ({match})" for match in MATCHES for m in metrics]
        lines += [
            f"### {dataset}",
            "",
            "| variant (our method) | " + " | ".join(head) + " |",
            "|---|" + "---|" * len(head),
        ]
        for (variant, method), gv in g.groupby(["variant", "method"], sort=False):
            title = [
                format_num(r.title_mean) + (f" ({r.paper:.4f})" if r.paper is not None and not pd.isna(r.paper) else "")
                for r in gv.itertuples()
            ]
            lines.append(
                f"| {md_cell(variant)} ({method}) | " + " | ".join(title + [format_num(v) for v in gv.id_mean]) + " |"
            )
        if unpublished([dataset], g, published):
            lines += ["", no_published_note(dataset)]
        lines.append("")
    return "\n".join(lines)


def sweep_points(
    runs: pd.DataFrame, settings: dict[str, dict[str, int]], key: str, metrics: tuple[str, ...] = (METRIC,)
) -> pd.DataFrame:
    """Mean/std over seeds of each of `metrics` per dataset and method, with the method's value of the swept
    setting (N, K, ...): `settings` maps dataset -> {method -> value}; methods absent from the runs are skipped."""
    pts = []
    for dataset, per in settings.items():
        for method, value in per.items():
            for metric in metrics:
                mean, std = seed_mean(runs, dataset, method, metric)
                if not math.isnan(mean):
                    pts.append(
                        {
                            "dataset": dataset,
                            key: int(value),
                            "method": method,
                            "metric": metric,
                            "mean": mean,
                            "std": std,
                        }
                    )
    return pd.DataFrame(pts, columns=["dataset", key, "method", "metric", "mean", "std"])


def sweep_figure(
    df: pd.DataFrame, key: str, xlabel: str, title: str, path: Path, xticks=None, metrics: tuple[str, ...] | None = None
) -> None:
    """Each of `metrics` (default: those in `df`'s `metric` column, else METRIC) against a swept (integer)
    setting, one panel per metric and one line per dataset, error bars = std over seeds; x ticks at
    `xticks`, else at the settings that ran, else at integers."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    if "metric" not in df.columns:
        df = df.assign(metric=METRIC)
    metrics = metrics or tuple(dict.fromkeys(df["metric"])) or (METRIC,)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        d = df[df.metric == metric]
        for dataset, g in d.groupby("dataset", sort=False):
            g = g.sort_values(key)
            ax.errorbar(g[key], g["mean"], yerr=g["std"], marker="o", capsize=3, label=dataset)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_ylim(bottom=0)  # a ranking metric: no negative axis even where every point is 0
        if xticks is not None:
            ax.set_xticks(xticks)
        elif len(d) and d[key].nunique() <= 12:
            ax.set_xticks(sorted(int(v) for v in d[key].unique()))  # the integer settings that ran
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=9)
        if len(d):
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


LENGTH_METRICS = ("HR@10", METRIC)  # the paper's reasoning-length figure shows both


def length_figure(runs: pd.DataFrame, lengths: dict[str, int], path: Path) -> pd.DataFrame:
    """Figure 3: HR@10 and NDCG@10 against the reasoning length N."""
    df = sweep_points(runs, {d: lengths for d in dict.fromkeys(runs.dataset)}, "N", LENGTH_METRICS)
    sweep_figure(
        df,
        "N",
        "reasoning length N (latent tokens; 0 = backbone)",
        "Reasoning length (the paper finds N = 1 best)",
        path,
        metrics=LENGTH_METRICS,
    )
    return df


def popularity(runs: pd.DataFrame, methods: list[str], data_dirs: dict[str, str], top: float) -> pd.DataFrame:
    from latentrec.data.processed_io import load_dataset

    out = []
    for dataset in dict.fromkeys(runs.dataset):
        if dataset not in data_dirs:
            continue
        ds = load_dataset(data_dirs[dataset])
        counts = np.bincount(ds.train["item_id"].to_numpy(), minlength=ds.n_items)
        popular = set(np.argsort(-counts, kind="stable")[: max(1, int(round(top * ds.n_items)))].tolist())
        target = ds.test["item_id"].to_numpy()
        for method in methods:
            if not len(method_runs(runs, dataset, method)):
                continue
            rows = pooled_rows(runs, dataset, method)
            is_pop = np.array([target[r] in popular for r in rows["row"]])
            for group, sel in (("popular", is_pop), ("unpopular", ~is_pop)):
                out.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "group": group,
                        "rows": int(sel.sum()),
                        "HR@10": float(rows["HR@10"][sel].mean()) if sel.any() else math.nan,
                        METRIC: float(rows[METRIC][sel].mean()) if sel.any() else math.nan,
                    }
                )
    return pd.DataFrame(out, columns=["dataset", "method", "group", "rows", "HR@10", METRIC])


def popularity_figure(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    datasets = list(dict.fromkeys(df.dataset)) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        g = df[df.dataset == dataset]
        methods = list(dict.fromkeys(g.method))
        for i, method in enumerate(methods):
            vals = [g[(g.method == method) & (g.group == grp)][METRIC].mean() for grp in ("popular", "unpopular")]
            ax.bar(np.arange(2) + i * 0.8 / max(1, len(methods)), vals, width=0.8 / max(1, len(methods)), label=method)
        ax.set_xticks(np.arange(2) + 0.4 - 0.4 / max(1, len(methods)), ["popular (top 20%)", "unpopular"])
        ax.set_ylabel(METRIC)
        ax.set_title(dataset, fontsize=9)
        if methods:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cost(runs: pd.DataFrame, methods: list[str], rl_logs: list[str]) -> pd.DataFrame:
    out = []
    for r in runs.itertuples():
        if r.method not in methods:
            continue
        log = Path(r.rows_path).with_name("train_log.json")
        if log.exists():
            shards = read_json(log).get("shards", [])
            users = sum(s["rows"] for s in shards)
            if users:
                out.append(
                    {
                        "dataset": r.dataset,
                        "method": r.method,
                        "seed": r.seed,
                        "what": "decode s/user",
                        "value": sum(s["seconds"] for s in shards) / users,
                        "device": shards[0].get("device"),
                    }
                )
    for p in rl_logs:
        log = read_json(p)
        parts = Path(p).parts
        out.append(
            {
                "dataset": parts[1],
                "method": f"LR-GRPO ({parts[3]}, {parts[-2]})",
                "seed": parts[4],
                "what": "RL s/step",
                "value": log["seconds_per_step"],
                "device": log.get("device"),
            }
        )
    return pd.DataFrame(out, columns=["dataset", "method", "seed", "what", "value", "device"])


def cost_figure(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    dec = df[df.what == "decode s/user"].groupby("method", sort=False)["value"].mean()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(dec)), dec.values)
    ax.set_xticks(range(len(dec)), dec.index, rotation=20, fontsize=7)
    ax.set_ylabel("decoding seconds per user")
    ax.set_title("Inference cost (10 beams; the latent is computed once per user)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(
    metrics_paths: list[str], data_dirs: dict[str, str], rl_logs: list[str], cfg: dict, paper_all: dict, out_dir: Path
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = load_runs(metrics_paths)
    note = (
        f"Scored on the first {cfg['test_limit']} test rows only."
        if cfg.get("test_limit")
        else "Scored on the full test split."
    )
    g = gains(runs, cfg.get("pairs", {}), paper_all.get("latentr3_table1", {}))
    write_csv(g, out_dir / "latentr3_gains.csv")
    write_text(
        gains_markdown(g, note, paper_all.get("latentr3_table1", {}), cfg.get("display_names")),
        out_dir / "latentr3_gains.md",
    )
    a = ablation(runs, cfg.get("ablation", {}), paper_all.get("latentr3_table2_ablation", {}))
    write_csv(a, out_dir / "latentr3_ablation.csv")
    write_text(
        ablation_markdown(a, note, paper_all.get("latentr3_table2_ablation", {})), out_dir / "latentr3_ablation.md"
    )
    pop = popularity(runs, cfg.get("popularity_methods", []), data_dirs, cfg.get("popular_fraction", 0.2))
    write_csv(pop, out_dir / "latentr3_fig2_popularity.csv")
    popularity_figure(pop, out_dir / "latentr3_fig2_popularity.png")
    length_figure(runs, cfg.get("lengths", {}), out_dir / "latentr3_fig3_reasoning_length.png").pipe(
        write_csv, out_dir / "latentr3_fig3_reasoning_length.csv"
    )
    grpo, recipes = cfg.get("grpo_compare") or {}, cfg.get("recipes") or {}
    original = {recipes.get(m, m) for m in grpo}  # the original-GRPO recipes: not LR-GRPO rows of the cost table
    c = cost(runs, cfg.get("cost_methods", []), [p for p in rl_logs if Path(p).parts[-5] not in original])
    write_csv(c, out_dir / "latentr3_cost.csv")
    cost_figure(c, out_dir / "latentr3_cost.png")
    if grpo:  # Figure 4 needs an original-GRPO method; without one (the default) it is not drawn
        paper_ratio = paper_all.get("latentr3_text_claims", {}).get("original_grpo_training_cost_ratio")
        gc = grpo_comparison(runs, grpo, rl_logs, recipes, paper_ratio)
        write_csv(gc, out_dir / "latentr3_fig4_grpo.csv")
        grpo_figure(gc, out_dir / "latentr3_fig4_grpo.png", paper_ratio)


# ------------------------------------------- Figure 4 (paper appendix F): the original GRPO against LR-GRPO
GRPO_METRICS = ("NDCG@10", "HR@10")
GRPO_COLUMNS = [
    "dataset",
    "method",
    "rl",
    "seeds",
    "NDCG@10",
    "NDCG@10_std",
    "HR@10",
    "HR@10_std",
    "rl_seconds_per_step",
    "rl_logs",
    "rl_device",
    "rl_world_size",
    "cost_ratio",
    "paper_cost_ratio",
]


def selected_rl_logs(rl_logs: list[str]) -> dict[tuple[str, str, str], dict]:
    """(dataset, recipe, seed folder) -> the rl_log.json of the RL grid point that `select-latent` keeps
    (the best validation -PPL), from paths results/{dataset}/latent/{recipe}/seed{s}/rl/{point}/rl_log.json."""
    best: dict[tuple[str, str, str], dict] = {}
    for p in rl_logs:
        parts = Path(p).parts
        key, log = (parts[-7], parts[-5], parts[-4]), read_json(p)
        if key not in best or log["valid_neg_ppl"] > best[key]["valid_neg_ppl"]:
            best[key] = log
    return best


def grpo_comparison(
    runs: pd.DataFrame,
    pairs: dict[str, str],
    rl_logs: list[str],
    recipes: dict[str, str],
    paper_ratio: float | None = None,
) -> pd.DataFrame:
    """Per dataset where an original-GRPO method ran (`pairs`: {original-GRPO method: its LR-GRPO method}):
    NDCG@10 and HR@10 (mean, std over seeds; matched by item id) of both, and the training seconds per RL
    optimiser step of each (mean over seeds of the selected grid point's `seconds_per_step`; `recipes`:
    {method: recipe}); `cost_ratio` = original / LR-GRPO seconds per step, beside the paper's."""
    logs = selected_rl_logs(rl_logs)
    if not len(runs):
        runs = pd.DataFrame(columns=["dataset", "method", "seed", "metrics", "rows_path"])
    out = []
    datasets = list(dict.fromkeys([*runs.dataset, *(k[0] for k in logs)]))
    for orig, lr in pairs.items():
        for dataset in datasets:
            rows = []
            for method, kind in ((orig, "original GRPO"), (lr, "LR-GRPO")):
                recipe = recipes.get(method, method)
                sps = [v for (d, r, _), v in logs.items() if d == dataset and r == recipe]
                g = method_runs(runs, dataset, method)
                row = {
                    "dataset": dataset,
                    "method": method,
                    "rl": kind,
                    "seeds": len(g),
                    "rl_logs": len(sps),
                    "rl_seconds_per_step": float(np.mean([v["seconds_per_step"] for v in sps])) if sps else math.nan,
                    "rl_device": sps[0].get("device") if sps else None,
                    "rl_world_size": sps[0].get("world_size") if sps else None,
                }
                for metric in GRPO_METRICS:
                    row[metric], row[f"{metric}_std"] = seed_mean(runs, dataset, method, metric)
                rows.append(row)
            if not (rows[0]["seeds"] or rows[0]["rl_logs"]):
                continue  # no original-GRPO run on this dataset
            a, b = rows[0]["rl_seconds_per_step"], rows[1]["rl_seconds_per_step"]
            rows[0]["cost_ratio"] = a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan
            rows[0]["paper_cost_ratio"] = paper_ratio
            out += rows
    return pd.DataFrame(out, columns=GRPO_COLUMNS)


def grpo_figure(df: pd.DataFrame, path: Path, paper_ratio: float | None = None) -> None:
    """LatentR3's Figure 4: per dataset, NDCG@10 and HR@10 of the original GRPO and of LR-GRPO (error bars:
    std over seeds), and their training seconds per RL step with the measured ratio beside the paper's."""
    plt = pyplot()
    if not len(df):
        fig, ax = plt.subplots(figsize=(5, 2.2))
        ax.axis("off")
        ax.text(0.5, 0.6, "no original-GRPO run", ha="center", va="center", fontsize=11, transform=ax.transAxes)
        ax.text(
            0.5,
            0.3,
            "(report.latentr3.grpo_compare names none that ran; config/paper.yaml runs one)",
            ha="center",
            va="center",
            fontsize=7,
            transform=ax.transAxes,
        )
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    datasets = list(dict.fromkeys(df.dataset))
    kinds = ("original GRPO", "LR-GRPO")
    x, w = np.arange(len(datasets)), 0.38
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = [(m, m, f"{m}_std") for m in GRPO_METRICS] + [
        ("RL seconds per optimiser step", "rl_seconds_per_step", None)
    ]
    for ax, (label, col, std) in zip(axes, panels):
        for i, kind in enumerate(kinds):
            vals = [df[(df.dataset == d) & (df.rl == kind)][col].mean() for d in datasets]
            errs = [df[(df.dataset == d) & (df.rl == kind)][std].mean() for d in datasets] if std else None
            ax.bar(x + (i - 0.5) * w, vals, w, yerr=errs, capsize=3 if std else 0, label=kind)
        ax.set_xticks(x, [d.replace("_", " ") for d in datasets], fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
    axes[0].set_title("Recommendation (test)", fontsize=8)
    axes[1].set_title("Recommendation (test)", fontsize=8)
    cost_ax = axes[2]
    cost_ax.set_title("Training cost", fontsize=8)
    top = df["rl_seconds_per_step"].max()
    if pd.notna(top) and top > 0:
        cost_ax.set_ylim(0, top * 1.45)
        for xi, d in zip(x, datasets):
            ratio = df[(df.dataset == d) & (df.rl == kinds[0])]["cost_ratio"].mean()
            if pd.notna(ratio):
                pub = f"\n(paper ≈{paper_ratio:g}×)" if paper_ratio else ""
                cost_ax.annotate(f"{ratio:.1f}×{pub}", (xi, top * 1.08), ha="center", va="bottom", fontsize=7)
    else:
        cost_ax.text(0.5, 0.5, "no RL timing", ha="center", va="center", fontsize=8, transform=cost_ax.transAxes)
    fig.suptitle("Original GRPO (decode-and-match, whole model) against LR-GRPO", fontsize=9, x=0.02, ha="left")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=120)
    plt.close(fig)

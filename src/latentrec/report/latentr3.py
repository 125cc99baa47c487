"""LatentR3's own tables and figures, from the runs, beside the published numbers.

- gains: each "+LatentR3" method against its backbone (BIGRec, D3): relative gain in ours and in the
  paper, with a paired t-test on the same test rows (pooled over seeds);
- ablation (paper Table 2): our variants under the paper's row names;
- Figure 2 (our numbering of the paper's analyses): NDCG@10 against the reasoning length N (N = 0 is the
  backbone without latent);
- Figure 3: popular (top 20 % of items by train frequency) against unpopular test targets;
- Figure 4: cost: decoding seconds per user of each method, and RL seconds per optimiser step.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from latentrec.eval.significance import mean_std
from latentrec.io_utils import read_json
from latentrec.report.significance_table import load_runs
from latentrec.report.tables import PAPER_METRICS, no_published_note, unpublished, write_csv, write_text

METRIC = "NDCG@10"


def _pooled_rows(runs: pd.DataFrame, dataset: str, method: str) -> pd.DataFrame:
    g = runs[(runs.dataset == dataset) & (runs.method == method)]
    return pd.concat([pd.read_parquet(p).assign(seed=s) for p, s in zip(g.rows_path, g.seed)], ignore_index=True)


def _mean(runs, dataset, method, metric=METRIC):
    g = runs[(runs.dataset == dataset) & (runs.method == method)]
    return mean_std(m[metric] for m in g.metrics) if len(g) else (math.nan, math.nan)


def gains(runs: pd.DataFrame, pairs: dict[str, str], paper: dict) -> pd.DataFrame:
    from scipy import stats

    out = []
    for dataset in dict.fromkeys(runs.dataset):
        for method, backbone in pairs.items():
            have = set(runs[runs.dataset == dataset].method)
            if method not in have or backbone not in have:
                continue
            a, b = _pooled_rows(runs, dataset, method), _pooled_rows(runs, dataset, backbone)
            both = a.merge(b, on=["seed", "row"], suffixes=("", "_b"))
            for pkey, metric in PAPER_METRICS.items():
                ours, base = _mean(runs, dataset, method, metric)[0], _mean(runs, dataset, backbone, metric)[0]
                pub = paper.get(dataset, {})
                p_ours, p_base = pub.get(method, {}).get(pkey), pub.get(backbone, {}).get(pkey)
                diff = both[metric] - both[f"{metric}_b"]
                p = float(stats.ttest_rel(both[metric], both[f"{metric}_b"]).pvalue) if diff.std() > 0 else math.nan
                out.append({"dataset": dataset, "method": method, "backbone": backbone, "metric": pkey,
                            "ours": ours, "ours_backbone": base, "ours_gain": ours / base - 1 if base else math.nan,
                            "paper": p_ours, "paper_backbone": p_base,
                            "paper_gain": p_ours / p_base - 1 if p_ours and p_base else math.nan,
                            "paired_rows": len(both), "p": p})
    return pd.DataFrame(out)


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.1%}"


def _p(p) -> str:
    """A p-value, or "–" where there is none (no paired test: identical rows, one seed, ...)."""
    return "–" if p is None or pd.isna(p) else f"{p:.3g}"


def gains_markdown(df: pd.DataFrame, note: str, published=None) -> str:
    """`published`: the paper's Table 1 by dataset; datasets absent from it get a line saying so."""
    lines = ["## LatentR3 against its backbone (relative gain; paired t-test on the same test rows)", "", note, "",
             "| dataset | method | vs | metric | ours | backbone | ours gain | paper gain | p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.backbone} | {r.metric} | {r.ours:.4f} | {r.ours_backbone:.4f} | "
                     f"{_pct(r.ours_gain)} | {_pct(r.paper_gain)} | {_p(r.p)} |")
    if len(df):
        missing = unpublished(df["dataset"], df.rename(columns={"paper_gain": "paper"}), published)
        lines += ["", *(no_published_note(d) for d in missing)] if missing else []
    return "\n".join(lines) + "\n"


def ablation(runs: pd.DataFrame, rows: dict[str, str], paper: dict) -> pd.DataFrame:
    out = []
    for dataset in dict.fromkeys(runs.dataset):
        for method, name in rows.items():
            if not len(runs[(runs.dataset == dataset) & (runs.method == method)]):
                continue
            for pkey, metric in PAPER_METRICS.items():
                mean, std = _mean(runs, dataset, method, metric)
                out.append({"dataset": dataset, "variant": name, "method": method, "metric": pkey, "ours_mean": mean,
                            "ours_std": std, "paper": paper.get(dataset, {}).get(name, {}).get(pkey)})
    return pd.DataFrame(out)


def ablation_markdown(df: pd.DataFrame, note: str, published=None) -> str:
    lines = ["## LatentR3 ablation (paper Table 2 layout; published value in parentheses)", "", note, ""]
    for dataset, g in df.groupby("dataset", sort=False):
        lines += [f"### {dataset}", "", "| variant (our method) | H@5 | H@10 | N@5 | N@10 |", "|---|---|---|---|---|"]
        for (variant, method), gv in g.groupby(["variant", "method"], sort=False):
            cells = [f"{r.ours_mean:.4f}" + (f" ({r.paper:.4f})" if r.paper is not None and not pd.isna(r.paper) else "")
                     for r in gv.itertuples()]
            lines.append(f"| {variant} ({method}) | " + " | ".join(cells) + " |")
        if unpublished([dataset], g, published):
            lines += ["", no_published_note(dataset)]
        lines.append("")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_points(runs: pd.DataFrame, settings: dict[str, dict[str, int]], key: str) -> pd.DataFrame:
    """Mean/std of METRIC per dataset and method, with the method's value of the swept setting (N, K, ...):
    `settings` maps dataset -> {method -> value}; methods absent from the runs are skipped."""
    pts = []
    for dataset, per in settings.items():
        for method, value in per.items():
            mean, std = _mean(runs, dataset, method)
            if not math.isnan(mean):
                pts.append({"dataset": dataset, key: int(value), "method": method, "mean": mean, "std": std})
    return pd.DataFrame(pts, columns=["dataset", key, "method", "mean", "std"])


def sweep_figure(df: pd.DataFrame, key: str, xlabel: str, title: str, path: Path, xticks=None) -> None:
    """METRIC against a swept (integer) setting, one line per dataset, error bars = std over seeds; x ticks
    at `xticks`, else at the settings that ran, else at integers."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for dataset, g in df.groupby("dataset", sort=False):
        g = g.sort_values(key)
        ax.errorbar(g[key], g["mean"], yerr=g["std"], marker="o", capsize=3, label=dataset)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRIC)
    ax.set_ylim(bottom=0)  # a ranking metric: no negative axis even where every point is 0
    if xticks is not None:
        ax.set_xticks(xticks)
    elif len(df) and df[key].nunique() <= 12:
        ax.set_xticks(sorted(int(v) for v in df[key].unique()))  # the integer settings that ran
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    if len(df):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def length_figure(runs: pd.DataFrame, lengths: dict[str, int], path: Path) -> pd.DataFrame:
    df = sweep_points(runs, {d: lengths for d in dict.fromkeys(runs.dataset)}, "N")
    sweep_figure(df, "N", "reasoning length N (latent tokens; 0 = backbone)",
                 "Reasoning length (the paper finds N = 1 best)", path)
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
            if not len(runs[(runs.dataset == dataset) & (runs.method == method)]):
                continue
            rows = _pooled_rows(runs, dataset, method)
            is_pop = np.array([target[r] in popular for r in rows["row"]])
            for group, sel in (("popular", is_pop), ("unpopular", ~is_pop)):
                out.append({"dataset": dataset, "method": method, "group": group, "rows": int(sel.sum()),
                            "HR@10": float(rows["HR@10"][sel].mean()) if sel.any() else math.nan,
                            METRIC: float(rows[METRIC][sel].mean()) if sel.any() else math.nan})
    return pd.DataFrame(out, columns=["dataset", "method", "group", "rows", "HR@10", METRIC])


def popularity_figure(df: pd.DataFrame, path: Path) -> None:
    plt = _plt()
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
                out.append({"dataset": r.dataset, "method": r.method, "seed": r.seed, "what": "decode s/user",
                            "value": sum(s["seconds"] for s in shards) / users, "device": shards[0].get("device")})
    for p in rl_logs:
        log = read_json(p)
        parts = Path(p).parts
        out.append({"dataset": parts[1], "method": f"LR-GRPO ({parts[3]}, {parts[-2]})", "seed": parts[4],
                    "what": "RL s/step", "value": log["seconds_per_step"], "device": log.get("device")})
    return pd.DataFrame(out, columns=["dataset", "method", "seed", "what", "value", "device"])


def cost_figure(df: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    dec = df[df.what == "decode s/user"].groupby("method", sort=False)["value"].mean()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(dec)), dec.values)
    ax.set_xticks(range(len(dec)), dec.index, rotation=20, fontsize=7)
    ax.set_ylabel("decoding seconds per user")
    ax.set_title("Inference cost (10 beams; the latent is computed once per user)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(metrics_paths: list[str], data_dirs: dict[str, str], rl_logs: list[str], cfg: dict, paper_all: dict,
          out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = load_runs(metrics_paths)
    note = (f"Scored on the first {cfg['test_limit']} test rows only." if cfg.get("test_limit") else
            "Scored on the full test split.")
    g = gains(runs, cfg.get("pairs", {}), paper_all.get("latentr3_table1", {}))
    write_csv(g, out_dir / "latentr3_gains.csv")
    write_text(gains_markdown(g, note, paper_all.get("latentr3_table1", {})), out_dir / "latentr3_gains.md")
    a = ablation(runs, cfg.get("ablation", {}), paper_all.get("latentr3_table2_ablation", {}))
    write_csv(a, out_dir / "latentr3_ablation.csv")
    write_text(ablation_markdown(a, note, paper_all.get("latentr3_table2_ablation", {})),
               out_dir / "latentr3_ablation.md")
    length_figure(runs, cfg.get("lengths", {}), out_dir / "latentr3_fig2_reasoning_length.png").pipe(
        write_csv, out_dir / "latentr3_fig2_reasoning_length.csv")
    pop = popularity(runs, cfg.get("popularity_methods", []), data_dirs, cfg.get("popular_fraction", 0.2))
    write_csv(pop, out_dir / "latentr3_fig3_popularity.csv")
    popularity_figure(pop, out_dir / "latentr3_fig3_popularity.png")
    c = cost(runs, cfg.get("cost_methods", []), rl_logs)
    write_csv(c, out_dir / "latentr3_fig4_cost.csv")
    cost_figure(c, out_dir / "latentr3_fig4_cost.png")

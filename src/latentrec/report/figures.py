"""Figures: ours against the published value, per method and dataset; an RL run's rewards over its steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentrec.io_utils import atomic_path
from latentrec.report.common import pyplot


def plot_against_paper(long: pd.DataFrame, path, metric: str = "N@10", ours_label: str = "ours") -> None:
    """Ours (`long`: one matching, tables.collect) beside the published value, per method and dataset."""
    plt = pyplot()
    d = long[long.metric == metric]
    datasets = list(dict.fromkeys(d["dataset"]))
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.5 * max(1, len(datasets)), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        g = d[d.dataset == dataset]
        x = np.arange(len(g))
        ax.bar(x - 0.2, g["ours_mean"], 0.4, yerr=g["ours_std"], label=ours_label, color="#3b75af", capsize=2)
        paper = pd.to_numeric(g["paper"], errors="coerce")
        ax.bar(x + 0.2, paper.fillna(0), 0.4, label="published", color="#ef8636")
        ax.set_xticks(x, g["method"], rotation=45, ha="right", fontsize=8)
        ax.set_title(dataset if paper.notna().any() else f"{dataset} (no published values)", fontsize=9)
        ax.set_ylabel(metric.replace("N@", "NDCG@").replace("H@", "HR@"))
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_rl_rewards(log: dict, path) -> None:
    """Reward of the noise-free latent and of all draws per optimiser step of an RL log (`rl_log.json`)."""
    steps = [h["step"] for h in log["history"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, [h["reward_clean"] for h in log["history"]], label="noise-free latent")
    ax.plot(steps, [h["reward"] for h in log["history"]], label="all draws", alpha=0.7)
    ax.set_xlabel("optimiser step")
    decoded = log["config"].get("rollout", "noise") != "noise"  # the original GRPO: 0/1 exact match
    ax.set_ylabel("reward (decoded title = target)" if decoded else "reward (-perplexity of the target)")
    ax.set_title(
        f"{'original GRPO' if decoded else 'LR-GRPO'}, lr {log['config']['lr']:g}: valid -PPL "
        f"{log['valid_neg_ppl_before']:.3f} -> {log['valid_neg_ppl']:.3f}",
        fontsize=8,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

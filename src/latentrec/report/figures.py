"""Figures: ours against the published value, per method and dataset; a trained model's curves over its steps."""

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


def plot_sft_curves(log: dict, path, title: str) -> None:
    """An SFT's training curve (`train_log.json`): the loss of every optimiser step and the validation loss
    at each epoch end, per target token."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = log.get("step_history", [])
    ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], marker=".", label="train loss (optimiser step)")
    ax.plot(
        [h["step"] for h in log["history"]],
        [h["valid_loss"] for h in log["history"]],
        marker="o",
        label="validation loss (epoch end)",
    )
    _integer_steps(ax)
    ax.set_ylabel("cross-entropy per target token")
    best = "never finite (diverged)" if log.get("diverged") else f"{log['best_valid_loss']:.4f}"
    ax.set_title(f"{title}\n{log['steps']} steps, best validation loss {best}", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, plt, path)


def plot_rl_curves(log: dict, path, title: str) -> None:
    """An RL run's training curves (`rl_log.json`): the reward of all draws and of the noise-free one per
    optimiser step, and the exact match (FLR-GRPO's hybrid reward; the original GRPO's reward is one)."""
    plt = pyplot()
    hist = log["history"]
    steps = [h["step"] for h in hist]
    decoded = log["config"].get("rollout", "noise") != "noise"  # the original GRPO: reward = exact match
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(steps, [h["reward"] for h in hist], marker=".", label="all draws")
    left.plot(steps, [h["reward_clean"] for h in hist], marker=".", label="noise-free latent")
    hybrid = log["config"].get("reward") == "hybrid"
    left.set_ylabel(
        "reward (decoded title = target)"
        if decoded
        else "reward (hybrid)"
        if hybrid
        else "reward (−perplexity of target)"
    )
    left.set_title(f"validation −PPL {log['valid_neg_ppl_before']:.3f} → {log['valid_neg_ppl']:.3f}", fontsize=9)
    keys = ("reward", "reward_clean") if decoded else ("exact_match", "exact_match_clean")
    for ax in (left, right):
        _integer_steps(ax)
    if hist and keys[0] in hist[0]:
        right.plot(steps, [h[keys[0]] for h in hist], marker=".", label="all draws")
        right.plot(steps, [h[keys[1]] for h in hist], marker=".", label="noise-free latent")
        right.set_ylim(-0.05, 1.05)
        right.legend(fontsize=7)
    else:
        right.text(
            0.5,
            0.5,
            "no exact match in this reward\n(it decodes no title)",
            ha="center",
            va="center",
            transform=right.transAxes,
            fontsize=9,
        )
        right.set_xticks([])
        right.set_yticks([])
    right.set_ylabel("exact match (greedy title = target)")
    left.legend(fontsize=7)
    fig.suptitle(f"{title}: {log['steps']} steps, lr {log['config']['lr']:g}", fontsize=9)
    _save(fig, plt, path)


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("optimiser step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, plt, path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

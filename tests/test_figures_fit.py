"""Outputs a reader trusts: every report figure, at its default size, keeps all its text on the canvas,
and the tables say why a cell has no published value.

Each figure is drawn from small synthetic inputs built here; `Figure.savefig` is wrapped to keep hold of
the figure, which is then drawn again while `Text.draw` records every text artist actually drawn (titles,
axis labels, the tick labels in view, annotations, colour-bar labels, legends).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from latentrec.report import flr, latentr3  # noqa: E402
from latentrec.report.figures import plot_against_paper  # noqa: E402
from latentrec.report.llm_vs_strongest import _markdown as llm_markdown  # noqa: E402
from latentrec.report.tables import to_markdown  # noqa: E402

TOL = 1.0  # px

LONG_TITLES = [  # share long prefixes: cut to 16 characters they would all read the same
    "The Very Best of Fleetwood Mac (Remastered Deluxe Edition)",
    "The Very Best of Fleetwood Mac Live at the BBC 1968-1971",
    "The Very Best of Fleetwood Mac: Rumours 35th Anniversary Box",
    "Kind of Blue",
    "The Very Best of Fleetwood Mac (Remastered Deluxe Edition)",  # the same title twice in one history
    "Abbey Road",
    "Blue Train (Rudy Van Gelder Edition, 24-bit Remaster)",
    "Nevermind",
]


# ------------------------------------------------------------------------------------------ inputs
def _stats(label: str, k: int = 4, seed: int = 0, dataset: str = "Toys_and_Games") -> dict:
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-0.3, 0.6, (k, k))
    cos = (cos + cos.T) / 2
    np.fill_diagonal(cos, 1.0)
    return {
        "cos": cos,
        "dataset": dataset,
        "method": "BIGRec+FLR",
        "label": label,
        "abs_corr": 0.31,
        "S_avg": 0.2,
        "A_max": 0.4,
        "DS": 0.3,
        "users": 16,
        "K": k,
        "seed": 0,
    }


def _attention(k: int = 4, titles=LONG_TITLES) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    h = len(titles)
    items = rng.uniform(0.002, 0.03, (2, k, h + 2))
    items[:, :, h:] = np.nan  # past the user's history
    other = 1 - np.nansum(items, -1)  # the "rest" of the prompt: ~0.9, would swamp the items
    alpha = rng.dirichlet(np.ones(k), 2)
    meta = {
        "history_titles": [list(titles), list(titles)],
        "target_titles": ["Rumours (Super Deluxe Edition with Bonus Tracks and Live Recordings)", "x"],
    }
    return {"item_attention": items, "other_attention": other, "alpha": alpha}, meta


def _long(datasets=("Toys_and_Games", "Synthetic_Music")) -> pd.DataFrame:
    methods = ["MostPop", "SASRec", "SASRec (CE)", "Base", "CoT", "BIGRec", "D3", "BIGRec+LatentR3", "BIGRec+FLR"]
    rows = []
    for d in datasets:
        for i, m in enumerate(methods):
            rows.append(
                {
                    "dataset": d,
                    "method": m,
                    "metric": "N@10",
                    "match": "id",
                    "ours_mean": 0.01 * (i + 1),
                    "ours_std": 0.002,
                    "n_seeds": 2,
                    "paper": None if d.startswith("Synthetic") else 0.05,
                    "rel_diff": math.nan,
                }
            )
    return pd.DataFrame(rows)


def _sweep(key: str, values, metrics=("NDCG@10",)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"dataset": d, key: v, "method": f"m{v}", "metric": m, "mean": 0.05 + 0.002 * v, "std": 0.003}
            for d in ("Synthetic_Music", "Toys_and_Games")
            for v in values
            for m in metrics
        ],
        columns=["dataset", key, "method", "metric", "mean", "std"],
    )  # as sweep_points, even empty


def _popularity() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"dataset": d, "method": m, "group": g, "rows": 10, "HR@10": 0.1, "NDCG@10": v}
            for d in ("Synthetic_Music",)
            for m in ("BIGRec", "BIGRec+LatentR3")
            for g, v in (("popular", 0.08), ("unpopular", 0.02))
        ]
    )


def _cost() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"dataset": "Synthetic_Music", "method": m, "seed": 0, "what": "decode s/user", "value": v, "device": "cpu"}
            for m, v in (("BIGRec", 0.4), ("BIGRec+LatentR3", 0.45), ("BIGRec+FLR", 0.47))
        ]
    )


def _grpo() -> pd.DataFrame:
    """As latentr3.grpo_comparison: per dataset the original GRPO (with the cost ratio) and LR-GRPO."""
    rows = []
    for d, (orig, lr) in (("Toys_and_Games", (812.5, 161.0)), ("CDs_and_Vinyl", (1030.0, 240.0))):
        rows.append(
            {
                "dataset": d,
                "method": "LatentR3-origGRPO",
                "rl": "original GRPO",
                "seeds": 2,
                "NDCG@10": 0.061,
                "NDCG@10_std": 0.003,
                "HR@10": 0.098,
                "HR@10_std": 0.004,
                "rl_seconds_per_step": orig,
                "rl_logs": 2,
                "rl_device": "cuda:0",
                "rl_world_size": 2,
                "cost_ratio": orig / lr,
                "paper_cost_ratio": 5,
            }
        )
        rows.append(
            {
                "dataset": d,
                "method": "BIGRec+LatentR3",
                "rl": "LR-GRPO",
                "seeds": 2,
                "NDCG@10": 0.069,
                "NDCG@10_std": 0.002,
                "HR@10": 0.11,
                "HR@10_std": 0.005,
                "rl_seconds_per_step": lr,
                "rl_logs": 2,
                "rl_device": "cuda:0",
                "rl_world_size": 2,
            }
        )
    return pd.DataFrame(rows, columns=latentr3.GRPO_COLUMNS)


def _timing(repeats: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": "Synthetic_Music",
                "method": m,
                "seed": 0,
                "seconds_per_user": v,
                "std": 0.0 if repeats == 1 else 0.01,
                "repeats": repeats,
                "rows": 3,
                "num_beams": b,
                "batch_size": 2,
                "reasoning_tokens": None,
                "device": "NVIDIA H200",
            }
            for m, v, b in (
                ("BIGRec", 0.4, 10),
                ("BIGRec+LatentR3", 0.45, 10),
                ("BIGRec+FLR", 0.47, 10),
                ("CoT", 1.9, 1),
            )
        ]
    )


def figures(out: Path) -> dict[str, callable]:
    """Name -> a call that draws that figure into `out` (also used to render them for a look)."""
    npz, meta = _attention()
    return {
        "table1_ndcg10": lambda: plot_against_paper(_long(), out / "table1_ndcg10.png"),
        "table1_ndcg10_one_dataset": lambda: plot_against_paper(
            _long(("Synthetic_Music",)), out / "table1_ndcg10_one_dataset.png"
        ),
        "flr_fig4_one_panel": lambda: flr.factor_figure([_stats("with constraints")], out / "flr_fig4_one_panel.png"),
        "flr_fig4_two_panels": lambda: flr.factor_figure(
            [_stats("with constraints"), _stats("without constraints", seed=1)], out / "flr_fig4_two_panels.png"
        ),
        "flr_fig4_empty": lambda: flr.factor_figure([], out / "flr_fig4_empty.png"),
        "flr_fig4_grid": lambda: flr.factor_figure(  # datasets x models; Games has no before/after pair here
            [
                _stats("with constraints, before FLR-GRPO"),
                _stats("without constraints", seed=1),
                _stats("after FLR-GRPO", seed=2),
                _stats("with constraints, before FLR-GRPO", seed=3, dataset="Video_Games"),
            ],
            out / "flr_fig4_grid.png",
        ),
        "flr_fig6": lambda: flr.attention_figure(
            [("with constraints (BIGRec+FLR)", npz)], meta, 0, "Synthetic_Music", out / "flr_fig6.png"
        ),
        "flr_fig6_before_after": lambda: flr.attention_figure(
            [("with constraints, before FLR-GRPO (BIGRec+FLR)", npz), ("after FLR-GRPO (FLR+FLR-GRPO)", npz)],
            meta,
            0,
            "Synthetic_Music",
            out / "flr_fig6_before_after.png",
        ),
        "flr_fig6_empty": lambda: flr.attention_figure([], None, 0, None, out / "flr_fig6_empty.png"),
        "flr_fig7": lambda: latentr3.popularity_figure(_popularity(), out / "flr_fig7.png"),
        "flr_fig8": lambda: latentr3.sweep_figure(
            _sweep("K", [1, 2, 3, 4]),
            "K",
            "number of factors K",
            "Factors K (the paper: best K 3 on CDs, 4 on Games)",
            out / "flr_fig8.png",
            xticks=[1, 2, 3, 4],
        ),
        "flr_fig8_empty": lambda: latentr3.sweep_figure(
            _sweep("K", []), "K", "number of factors K", "Factors K", out / "flr_fig8_empty.png"
        ),
        "flr_fig9": lambda: flr.timing_figure(_timing(1), out / "flr_fig9.png"),
        "flr_fig9_repeats": lambda: flr.timing_figure(_timing(3), out / "flr_fig9_repeats.png"),
        "latentr3_fig2": lambda: latentr3.popularity_figure(_popularity(), out / "latentr3_fig2.png"),
        "latentr3_fig3": lambda: latentr3.sweep_figure(
            _sweep("N", [0, 1], latentr3.LENGTH_METRICS),
            "N",
            "reasoning length N (latent tokens; 0 = backbone)",
            "Reasoning length (the paper finds N = 1 best)",
            out / "latentr3_fig3.png",
        ),
        "latentr3_fig3_wide": lambda: latentr3.sweep_figure(
            _sweep("N", list(range(0, 40, 3))), "N", "N", "N sweep", out / "latentr3_fig3_wide.png"
        ),
        "latentr3_cost": lambda: latentr3.cost_figure(_cost(), out / "latentr3_cost.png"),
        "latentr3_fig4_grpo": lambda: latentr3.grpo_figure(_grpo(), out / "latentr3_fig4_grpo.png", 5),
        "latentr3_fig4_grpo_empty": lambda: latentr3.grpo_figure(
            _grpo().iloc[:0], out / "latentr3_fig4_grpo_empty.png", 5
        ),
    }


# ----------------------------------------------------------------------------------------- drawing
@contextmanager
def _keep_figures():
    kept, save = [], Figure.savefig

    def savefig(self, *a, **k):
        kept.append(self)
        return save(self, *a, **k)

    with mock.patch.object(Figure, "savefig", savefig):
        yield kept


def _draw(fig) -> tuple[list[tuple[Text, object]], object]:
    """Draw `fig`; (every text artist drawn with its window extent, the renderer)."""
    drawn, draw = [], Text.draw

    def record(self, renderer):
        draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    canvas = FigureCanvasAgg(fig)  # plt.close left the figure a bare canvas
    with mock.patch.object(Text, "draw", record):
        canvas.draw()
    renderer = canvas.get_renderer()
    return [(t, t.get_window_extent(renderer)) for t in drawn], renderer


def _render(name: str, tmp_path: Path):
    with _keep_figures() as kept:
        figures(tmp_path)[name]()
    assert len(kept) == 1 and (tmp_path / f"{name}.png").stat().st_size > 0
    fig = kept[0]
    texts, renderer = _draw(fig)
    return fig, texts, renderer


@pytest.mark.parametrize("name", list(figures(Path("."))))
def test_every_text_lies_on_the_canvas(name, tmp_path):
    fig, texts, renderer = _render(name, tmp_path)
    box = fig.bbox
    assert texts
    for t, e in texts:
        assert e.x0 >= box.x0 - TOL and e.y0 >= box.y0 - TOL and e.x1 <= box.x1 + TOL and e.y1 <= box.y1 + TOL, (
            f"{name}: {t.get_text()!r} at {e} is outside the figure {box}"
        )
    tight, whole, tol = fig.get_tightbbox(renderer), fig.bbox_inches, TOL / fig.dpi  # inches
    assert (
        tight.x0 >= whole.x0 - tol
        and tight.y0 >= whole.y0 - tol
        and tight.x1 <= whole.x1 + tol
        and tight.y1 <= whole.y1 + tol
    ), f"{name}: tight box {tight} is outside the figure {whole}"


# ---------------------------------------------------------------------------------- specific fixes
def _ticks(ax, axis="x") -> list[str]:
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    a = ax.xaxis if axis == "x" else ax.yaxis
    return [t.label1.get_text() for t in a.get_major_ticks() if lo <= t.get_loc() <= hi and t.label1.get_text()]


@pytest.mark.parametrize("name", ["latentr3_fig3", "latentr3_fig3_wide", "flr_fig8"])
def test_swept_settings_have_integer_ticks(name, tmp_path):
    fig, _, _ = _render(name, tmp_path)
    labels = _ticks(fig.axes[0])
    assert labels and all(s.replace("−", "-").lstrip("-").isdigit() for s in labels), labels
    if name == "latentr3_fig3":
        assert labels == ["0", "1"]


def test_latentr3_figures_carry_the_papers_numbers(tmp_path):
    """LatentR3 Figure 2 is popularity, Figure 3 reasoning length with HR@10 and NDCG@10 (the paper's panels);
    Figure 4 (the original GRPO) is drawn only where the config runs one."""
    root = tmp_path / "results"
    paths = []
    for method, level in (("BIGRec", 0.05), ("BIGRec+LatentR3", 0.07)):
        d = root / "Toys_and_Games" / method / "seed0"
        d.mkdir(parents=True)
        metrics = {f"{pre}{m}@{k}": level * (k / 5) for pre in ("", "title_") for m in ("HR", "NDCG") for k in (5, 10)}
        (d / "metrics.json").write_text(
            json.dumps({"dataset": "Toys_and_Games", "method": method, "seed": 0, "metrics": metrics})
        )
        paths.append(str(d / "metrics.json"))
    cfg = {"lengths": {"BIGRec": 0, "BIGRec+LatentR3": 1}}
    with _keep_figures() as kept:
        latentr3.build(paths, {}, [], cfg, {}, tmp_path / "tables")
    names = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert {"latentr3_fig2_popularity.png", "latentr3_fig3_reasoning_length.png", "latentr3_cost.png"} <= set(names)
    assert not any("fig4" in n for n in names)  # no original-GRPO method configured: no Figure 4 at all
    length = next(f for f in kept if [ax.get_ylabel() for ax in f.axes] == ["HR@10", "NDCG@10"])
    assert [len(ax.lines) > 0 for ax in length.axes] == [True, True]
    sweep = pd.read_csv(tmp_path / "tables" / "latentr3_fig3_reasoning_length.csv")
    assert sweep.set_index(["N", "metric"])["mean"].to_dict() == pytest.approx(
        {(0, "HR@10"): 0.1, (0, "NDCG@10"): 0.1, (1, "HR@10"): 0.14, (1, "NDCG@10"): 0.14}
    )
    latentr3.build(
        paths, {}, [], dict(cfg, grpo_compare={"LatentR3-origGRPO": "BIGRec+LatentR3"}), {}, tmp_path / "with_grpo"
    )
    assert (tmp_path / "with_grpo" / "latentr3_fig4_grpo.png").exists()


def test_fig4_one_panel_title_and_annotation_colours(tmp_path):
    fig, texts, _ = _render("flr_fig4_one_panel", tmp_path)
    ax = fig.axes[0]
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t for t in ax.texts}
    dark, light = cells[(0, 0)], min(cells.values(), key=lambda t: abs(float(t.get_text())))
    assert dark.get_text() == "1.00" and min(to_rgb(dark.get_color())) > 0.9  # white on the dark red diagonal
    assert max(to_rgb(light.get_color())) < 0.2  # black on a pale cell
    assert "0.44 -> 0.03" in fig._suptitle.get_text().replace("\n", " ")
    assert fig.axes[1].get_ylabel()  # the colour bar says what it shows


def test_fig6_labels_colorbar_and_rest(tmp_path):
    fig, texts, _ = _render("flr_fig6", tmp_path)
    ax = fig.axes[0]
    items = _ticks(ax, "y")
    assert len(items) == len(LONG_TITLES) and len(set(items)) == len(items)  # unique, one per history item
    assert all(len(s) >= min(30, len(t)) for s, t in zip(items, LONG_TITLES))  # longer than ~16 characters
    assert any("Fleetwood Mac Live at" in s for s in items)
    assert all(t.get_fontsize() >= 7 for t in ax.get_yticklabels() + ax.get_xticklabels())
    im = ax.images[0]
    assert im.colorbar is not None and im.colorbar.ax.get_ylabel()
    assert im.get_array().shape == (len(LONG_TITLES), 4)  # items x factors: no "(rest)" column on the scale
    assert im.norm.vmax < 0.05  # the scale spans the item attentions, not the ~0.9 rest
    assert all("rest" in s for s in _ticks(ax, "x"))  # the rest is written per factor instead
    assert not any(t.get_text() == "(rest)" for t, _ in texts)


def test_fig9_one_repeat_says_n_1(tmp_path):
    fig, texts, _ = _render("flr_fig9", tmp_path)
    assert sum(t.get_text() == "n = 1" for t, _ in texts) == 4
    md = flr.timing_markdown(_timing(1))
    assert "± 0.0000" not in md and "| 0.4000 (n = 1) |" in md
    assert "0.4000 ± 0.0100" in flr.timing_markdown(_timing(3))
    fig, texts, _ = _render("flr_fig9_repeats", tmp_path)
    assert not any(t.get_text() == "n = 1" for t, _ in texts)


def test_llm_vs_strongest_columns_are_unique():
    md = llm_markdown(pd.DataFrame(), "NDCG@10", 0.05)
    header = next(ln for ln in md.splitlines() if ln.startswith("| dataset"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert len(cols) == 11 and len(set(cols)) == len(cols)
    assert "LLM method" in cols and "strongest baseline" in cols


def test_gains_table_prints_a_dash_for_a_missing_p_and_says_why_no_paper_values():
    df = pd.DataFrame(
        [
            {
                "dataset": "Synthetic_Music",
                "method": "BIGRec+LatentR3",
                "backbone": "BIGRec",
                "metric": m,
                "ours_title": 0.1,
                "backbone_title": 0.1,
                "gain_title": 0.0,
                "paper": None,
                "paper_backbone": None,
                "paper_gain": math.nan,
                "paired_rows": 6,
                "p_title": p,
                "mde_title": math.nan,
                "ours_id": 0.1,
                "backbone_id": 0.1,
                "gain_id": 0.0,
                "p_id": p,
                "mde_id": 0.02,
            }
            for m, p in (("N@10", math.nan), ("H@10", 0.0123))
        ]
    )
    md = latentr3.gains_markdown(df, "note", {"Toys_and_Games": {}})
    assert "nan" not in md.lower() and "| – |" in md and "| 0.012 |" in md  # p to two significant digits
    assert "| 0.0200 (20%) |" in md  # the MDE, and its share of the backbone's mean
    assert "No published values: Synthetic_Music is the synthetic default dataset" in md


def test_tables_say_why_a_dataset_has_no_published_values():
    long = _long().assign(rel_diff=math.nan)
    md = to_markdown(long, "Table 1", {"Toys_and_Games": {}})
    synth = md[md.index("### Synthetic_Music") :]
    assert "(–)" in synth and "No published values: Synthetic_Music is the synthetic default dataset" in synth
    assert "No published values" not in md[: md.index("### Synthetic_Music")]
    beauty = long.assign(dataset=long.dataset.str.replace("Synthetic_Music", "Beauty"))
    md = to_markdown(beauty, "T", {"Toys_and_Games": {}})
    assert "No published values: Beauty is not in the papers (no entry in paper_results.yaml)." in md
    t2 = long.assign(row=long.method, metric=long.metric)
    t2 = t2.assign(title_mean=t2.ours_mean, title_std=t2.ours_std, id_mean=t2.ours_mean, id_std=t2.ours_std)
    md2 = flr.table2_markdown(t2, pd.DataFrame(), "note", {"Toys_and_Games": {}})
    assert md2.count("No published values") == 1 and "Synthetic_Music is the synthetic" in md2
    grid = long.assign(
        column=long.method,
        title_mean=long.ours_mean,
        title_std=long.ours_std,
        id_mean=long.ours_mean,
        id_std=long.ours_std,
    )
    md4 = flr.grid_markdown(grid, "Table 4", "dataset", "column", "note", {"Toys_and_Games": {}})
    assert md4.count("No published values") == 1
    ab = long.assign(
        variant=long.method,
        title_mean=long.ours_mean,
        title_std=long.ours_std,
        id_mean=long.ours_mean,
        id_std=long.ours_std,
    )
    assert latentr3.ablation_markdown(ab, "note", {"Toys_and_Games": {}}).count("No published values") == 1


def test_grpo_comparison_reads_the_selected_rl_point_of_each_seed(tmp_path):
    """Figure 4's numbers: per seed the RL grid point select-latent keeps (best validation -PPL), the cost
    ratio original / LR-GRPO; no original-GRPO run: no rows (the figure says so)."""
    from latentrec.io_utils import write_json

    logs = []
    for recipe, seconds in (("LatentR3-origGRPO", (50.0, 30.0)), ("LatentR3", (10.0, 6.0))):
        for seed in (0, 1):
            for point, neg_ppl, sps in (("lr1e-4", -3.0, seconds[0]), ("lr5e-4", -4.0, seconds[1])):
                p = tmp_path / f"results/Toys_and_Games/latent/{recipe}/seed{seed}/rl/{point}/rl_log.json"
                p.parent.mkdir(parents=True)
                write_json({"valid_neg_ppl": neg_ppl, "seconds_per_step": sps, "device": "cpu", "world_size": 1}, p)
                logs.append(str(p))
    runs = pd.DataFrame(
        [
            {
                "dataset": "Toys_and_Games",
                "method": m,
                "seed": s,
                "metrics": {"NDCG@10": v, "HR@10": 2 * v},
                "rows_path": "",
            }
            for m, v in (("LatentR3-origGRPO", 0.05), ("BIGRec+LatentR3", 0.07))
            for s in (0, 1)
        ]
    )
    recipes = {"LatentR3-origGRPO": "LatentR3-origGRPO", "BIGRec+LatentR3": "LatentR3"}
    df = latentr3.grpo_comparison(runs, {"LatentR3-origGRPO": "BIGRec+LatentR3"}, logs, recipes, 5)
    assert list(df.rl) == ["original GRPO", "LR-GRPO"] and list(df.seeds) == [2, 2] and list(df.rl_logs) == [2, 2]
    assert list(df.rl_seconds_per_step) == [50.0, 10.0] and df.cost_ratio[0] == 5.0 and df.paper_cost_ratio[0] == 5
    assert list(df["NDCG@10"]) == pytest.approx([0.05, 0.07])
    none = latentr3.grpo_comparison(
        runs[runs.method != "LatentR3-origGRPO"],
        {"LatentR3-origGRPO": "BIGRec+LatentR3"},
        [p for p in logs if "origGRPO" not in p],
        recipes,
        5,
    )
    assert none.empty and list(none.columns) == latentr3.GRPO_COLUMNS
    assert latentr3.grpo_comparison(pd.DataFrame(), {}, [], {}).empty

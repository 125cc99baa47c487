"""FLR analyses: factor dump (item-level attention), decode timing, and the report from run files."""

import copy
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from latentrec.llm.analysis import dump_factors, item_token_spans, time_decode
from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.latent import new_reasoner
from latentrec.report.flr import build, factor_stats
from tests.latent_toys import ALBUMS, catalog_dataset

TITLES = ALBUMS[:10]


@pytest.fixture(scope="module")
def ds():
    n = len(TITLES)
    return catalog_dataset(
        TITLES, [[(u + j) % n for j in range(2 + u % 3)] for u in range(5)], [(u + 4) % n for u in range(5)]
    )


@pytest.fixture(scope="module")
def flr_tok(smollm2_tokenizer):
    return copy.deepcopy(smollm2_tokenizer)  # new_reasoner adds <|Thought|>: keep the session's tokenizer clean


@pytest.fixture(scope="module")
def flr(flr_tok):
    tok = flr_tok
    return new_reasoner(
        tiny_llama_like(tok, seed=2), tok, head="flr", head_options={"n_factors": 3}, refine_steps=2, seed=0
    ).eval()


def test_item_token_spans_cover_each_title(smollm2_tokenizer):
    tok = smollm2_tokenizer
    titles = ["Kind of Blue", "Rumours", "The Wall"]
    owner = item_token_spans(tok, titles, "musics")
    from latentrec.llm.prompts import SegmentEncoder

    ids = SegmentEncoder(tok).prompt_ids(titles, "musics")
    assert len(owner) == len(ids)
    for j, t in enumerate(titles):
        text = tok.decode([i for i, o in zip(ids, owner) if o == j])
        assert t in text and len(text) <= len(t) + 4  # the title's tokens (a quote may share one)


def test_dump_factors_shapes_and_attention_mass(flr, flr_tok, ds):
    out = dump_factors(flr, flr_tok, ds, np.arange(5), "musics", batch_size=2)
    assert out["factors"].shape == (5, 3, 64) and out["alpha"].shape == (5, 3)
    assert out["item_attention"].shape == (5, 3, 4)
    hist_len = ds.test["history_item_ids"].map(len).to_numpy()
    for u in range(5):
        items = out["item_attention"][u]
        assert np.isfinite(items[:, : hist_len[u]]).all() and np.isnan(items[:, hist_len[u] :]).all()
        # every factor's attention over [prompt, thought slot] sums to 1: history items + the rest
        np.testing.assert_allclose(np.nansum(items, 1) + out["other_attention"][u], 1.0, atol=1e-5)
    # Batching does not change a user's factors (left padding is masked).
    alone = dump_factors(flr, flr_tok, ds, np.arange(4, 5), "musics", batch_size=1)
    np.testing.assert_allclose(alone["factors"][0], out["factors"][4], atol=1e-5)
    np.testing.assert_allclose(alone["item_attention"][0], out["item_attention"][4][:, :3], atol=1e-5)
    s = factor_stats(out)
    assert s["cos"].shape == (3, 3) and np.allclose(np.diag(s["cos"]), 1)
    assert 0 <= s["S_avg"] <= 1 and 0 < s["A_max"] <= 1 and s["DS"] == pytest.approx((1 - s["S_avg"]) * s["A_max"])


def test_factor_stats_on_orthogonal_and_identical_factors():
    eye = np.eye(4)[None, :3].repeat(2, 0)  # orthogonal unit factors
    att = np.array([[[1.0, 0, 0], [0, 0.5, 0.5], [0.2, 0.2, 0.6]]] * 2)
    s = factor_stats({"factors": eye, "item_attention": att})
    assert s["S_avg"] == pytest.approx(0) and s["A_max"] == pytest.approx((1 + 0.5 + 0.6) / 3)
    same = factor_stats({"factors": np.ones((2, 3, 4)) + np.arange(4), "item_attention": att})
    assert same["S_avg"] == pytest.approx(1) and same["DS"] == pytest.approx(0)


def test_time_decode_reports_seconds_per_user(smollm2_tokenizer, ds):
    llm = tiny_llama_like(smollm2_tokenizer, seed=1).eval()
    t = time_decode(
        llm,
        smollm2_tokenizer,
        ds,
        np.arange(3),
        "musics",
        {"num_beams": 1, "num_return": 1, "batch_size": 2, "max_new_tokens": 16, "cot": {"max_reasoning_tokens": 2}},
        repeats=2,
    )
    assert len(t["seconds_per_user"]) == 2 and t["mean"] > 0 and t["rows"] == 3
    assert t["mean_reasoning_tokens"] <= 2 and t["generation_config"]["num_beams"] == 1


def _run(root, dataset, method, seed, ndcg, n=6):
    d = root / dataset / method / f"seed{seed}"
    d.mkdir(parents=True)
    rng = np.random.default_rng(zlib.crc32(f"{method}/{seed}".encode()))  # hash() of a str varies per process
    rows = pd.DataFrame(
        {"row": range(n), **{m: (0.5 + rng.random(n)) * ndcg for m in ("HR@5", "HR@10", "NDCG@5", "NDCG@10")}}
    )
    for m in ("HR@5", "HR@10", "NDCG@5", "NDCG@10"):  # matched by title: every id hit, and a few more
        rows[f"title_{m}"] = rows[m] * 1.5
    rows.to_parquet(d / "rows.parquet")
    metrics = {c: float(rows[c].mean()) for c in rows.columns if "@" in c}
    (d / "metrics.json").write_text(
        json.dumps({"dataset": dataset, "method": method, "seed": seed, "metrics": metrics})
    )
    return str(d / "metrics.json")


def test_report_writes_every_table_and_figure_and_skips_absent_methods(tmp_path, flr, flr_tok, ds):
    root = tmp_path / "results"
    metrics = [
        _run(root, "Video_Games", m, s, v)
        for m, v in (
            ("SASRec", 0.03),
            ("BIGRec", 0.04),
            ("BIGRec+FLR", 0.06),
            ("FLR-reg-none", 0.05),
            ("BIGRec+LatentR3", 0.05),
            ("FLR-K1", 0.04),
        )
        for s in (0, 1)
    ]
    out = dump_factors(flr, flr_tok, ds, np.arange(5), "musics")
    fpath = root / "Video_Games" / "BIGRec+FLR" / "seed0" / "flr_factors.npz"
    np.savez(fpath, **out)
    fpath.with_suffix(".json").write_text(
        json.dumps(
            {
                "history_titles": [[TITLES[i] for i in h] for h in ds.test["history_item_ids"]],
                "target_titles": TITLES[:5],
            }
        )
    )
    tpath = root / "Video_Games" / "BIGRec" / "seed0" / "inference_time.json"
    tpath.write_text(
        json.dumps(
            {
                "mean": 0.5,
                "std": 0.01,
                "repeats": 3,
                "rows": 100,
                "device": "cpu",
                "generation_config": {"num_beams": 10, "batch_size": 4},
            }
        )
    )
    cfg = {
        "table2": {
            "rows": {
                "SASRec": "SASRec",
                "CoT": "CoT",
                "BIGRec": "BIGRec",
                "BIGRec+LatentR3": "LatentR3",
                "BIGRec+FLR": "FLR",
            },
            "method": "BIGRec+FLR",
            "baselines": ["SASRec", "CoT", "BIGRec", "BIGRec+LatentR3"],
        },
        "table3": {
            "rows": {"FLR-reg-none": "none", "BIGRec+FLR": "attn_div+orth+sparse"},
            "datasets": ["Video_Games", "Toys_and_Games"],
        },
        "table4": ["BIGRec+LatentR3", "BIGRec+FLR", "FLR+LR-GRPO", "FLR+FLR-GRPO"],
        "factors": {"methods": {"BIGRec+FLR": "with constraints", "FLR-reg-none": "without constraints"}},
        "popularity_methods": ["BIGRec+LatentR3", "BIGRec+FLR"],
        "n_factors": {"Video_Games": {"FLR-K1": 1, "BIGRec+FLR": 4}},
        "timing": {"methods": ["BIGRec", "BIGRec+LatentR3"]},
        "test_limit": 6,
    }
    paper = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "paper_results.yaml").read_text())
    build(metrics, {}, [str(fpath)], [str(tpath)], cfg, paper, tmp_path / "tables")
    t2 = (tmp_path / "tables" / "flr_table2.md").read_text()
    assert "| FLR (BIGRec+FLR) | 2 |" in t2 and "(0.0548)" in t2  # published Games FLR N@10
    assert "| Video_Games | BIGRec+LatentR3 | N@10 (title) | N@10 |" in t2 and "CoT" not in t2  # absent: skipped
    t3 = (tmp_path / "tables" / "flr_table3.md").read_text()
    assert "| none (FLR-reg-none) |" in t3 and "(0.0528)" in t3
    t4 = (tmp_path / "tables" / "flr_table4.md").read_text()
    assert "| FLR (BIGRec+FLR) |" in t4 and "| LatentR3 (BIGRec+LatentR3) |" in t4
    dis = (tmp_path / "tables" / "flr_disentanglement.md").read_text()
    assert "| Video_Games | BIGRec+FLR | with constraints | 5 | 3 |" in dis
    k = pd.read_csv(tmp_path / "tables" / "flr_fig8_factors_k.csv")
    assert sorted(k.K) == [1, 4]
    assert (
        "| Video_Games | BIGRec | 10 | 4 | 100 | 3 | 0.5000"
        in (tmp_path / "tables" / "flr_fig9_inference_time.md").read_text()
    )
    for name in (
        "fig4_factor_similarity",
        "fig6_factor_attention",
        "fig7_popularity",
        "fig8_factors_k",
        "fig9_inference_time",
    ):
        assert (tmp_path / "tables" / f"flr_{name}.png").stat().st_size > 0
    # Nothing at all ran: the files are still written.
    build([], {}, [], [], cfg, paper, tmp_path / "empty")
    assert "absent" in (tmp_path / "empty" / "flr_table2.md").read_text()


def _dump(root, dataset, method, out, ds):
    path = root / dataset / method / "seed0" / "flr_factors.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "history_titles": [[TITLES[i] for i in h] for h in ds.test["history_item_ids"]],
                "target_titles": TITLES[:5],
            }
        )
    )
    return str(path)


def test_factors_before_and_after_flr_grpo_in_table_and_figures(tmp_path, flr, flr_tok, ds):
    """FLR Figures 4 and 6 and the disentanglement table show the model before and after FLR-GRPO."""
    from unittest import mock

    from matplotlib.figure import Figure

    root = tmp_path / "results"
    before = dump_factors(flr, flr_tok, ds, np.arange(5), "musics")
    rng = np.random.default_rng(0)
    after = {**before, "factors": before["factors"] + rng.normal(0, 1, before["factors"].shape).astype(np.float32)}
    paths = [
        _dump(root, "Video_Games", "FLR+FLR-GRPO", after, ds),
        _dump(root, "Video_Games", "BIGRec+FLR", before, ds),
    ]
    labels = {"BIGRec+FLR": "before FLR-GRPO", "FLR-reg-none": "without constraints", "FLR+FLR-GRPO": "after FLR-GRPO"}
    kept, save = {}, Figure.savefig

    def savefig(self, path, *a, **k):
        kept[Path(path).name] = self
        return save(self, path, *a, **k)

    with mock.patch.object(Figure, "savefig", savefig):
        build([], {}, paths, [], {"factors": {"methods": labels, "user": 1}}, {}, tmp_path / "tables")
    dis = (tmp_path / "tables" / "flr_disentanglement.md").read_text()
    rows = [ln for ln in dis.splitlines() if ln.startswith("| Video_Games |")]
    assert [ln.split(" | ")[1:3] for ln in rows] == [
        ["BIGRec+FLR", "before FLR-GRPO"],
        ["FLR+FLR-GRPO", "after FLR-GRPO"],
    ]
    csv = pd.read_csv(tmp_path / "tables" / "flr_disentanglement.csv")
    assert csv.set_index("method").loc["BIGRec+FLR", "S_avg"] != csv.set_index("method").loc["FLR+FLR-GRPO", "S_avg"]

    def titles(fig):
        return [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_title()]

    fig4 = titles(kept["flr_fig4_factor_similarity.png"])
    assert len(fig4) == 2 and "before FLR-GRPO" in fig4[0] and "after FLR-GRPO" in fig4[1]
    fig6 = kept["flr_fig6_factor_attention.png"]
    assert titles(fig6) == ["before FLR-GRPO (BIGRec+FLR)", "after FLR-GRPO (FLR+FLR-GRPO)"]
    images = [ax.images[0] for ax in fig6.axes if ax.images]
    assert len(images) == 2 and images[0].norm.vmax == images[1].norm.vmax  # one colour scale for both
    np.testing.assert_allclose(images[1].get_array(), after["item_attention"][1][:, :3].T)  # user 1: 3 items


def test_table2_footnotes_the_published_ndcg_above_hr():
    """FLR Table 2 prints Instruments' Base and CoT N@K > H@K as published, marked as impossible."""
    from latentrec.report.flr import table2_markdown

    root = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((root / "config" / "paper_results.yaml").read_text())["flr_table2"]
    rows = [
        {
            "dataset": "Musical_Instruments",
            "row": row,
            "method": method,
            "metric": m,
            "title_mean": 0.01,
            "title_std": 0.0,
            "id_mean": 0.005,
            "id_std": 0.0,
            "n_seeds": 1,
            "paper": paper["Musical_Instruments"][row][m],
        }
        for row, method in (("Base", "Base"), ("CoT", "CoT"), ("BIGRec", "BIGRec"))
        for m in ("H@5", "H@10", "N@5", "N@10")
    ]
    md = table2_markdown(pd.DataFrame(rows), pd.DataFrame(), "note", paper)
    base = next(ln for ln in md.splitlines() if ln.startswith("| Base (Base)"))
    assert "(0.0296) †" in base and "(0.0411) †" in base and "(0.0154) †" not in base
    assert "†" not in next(ln for ln in md.splitlines() if ln.startswith("| BIGRec (BIGRec)"))
    assert "Base N@5, Base N@10, CoT N@5, CoT N@10 exceeds" in md


@pytest.mark.parametrize(
    "wanted, shown",
    [
        (None, "Video_Games"),
        ("CDs_and_Vinyl", "CDs_and_Vinyl"),
        ("Toys_and_Games", "CDs_and_Vinyl (Toys_and_Games has no factors"),
    ],
)
def test_figure6_is_drawn_on_the_configured_dataset(tmp_path, flr, flr_tok, ds, wanted, shown):
    """FLR Figure 6 shows Video Games (the paper's) by default, not the alphabetically first dataset; the key
    `factors.figure6_dataset` picks another, and a dataset without factors falls back, saying so."""
    from unittest import mock

    from matplotlib.figure import Figure

    out = dump_factors(flr, flr_tok, ds, np.arange(5), "musics")
    paths = [_dump(tmp_path / "results", d, "BIGRec+FLR", out, ds) for d in ("CDs_and_Vinyl", "Video_Games")]
    kept, save = {}, Figure.savefig

    def savefig(self, path, *a, **k):
        kept[Path(path).name] = self
        return save(self, path, *a, **k)

    factors = {"methods": {"BIGRec+FLR": "with constraints"}, **({"figure6_dataset": wanted} if wanted else {})}
    with mock.patch.object(Figure, "savefig", savefig):
        build([], {}, paths, [], {"factors": factors}, {}, tmp_path / "tables")
    title = kept["flr_fig6_factor_attention.png"]._suptitle.get_text().replace("\n", " ")
    assert title.startswith(f"{shown}")

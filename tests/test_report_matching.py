"""Like with like: every table that prints a published value prints beside it ours under the matching that
value was published under (item id for the traditional baselines, title string for the LLM rows), and ours
under the other matching in its own labelled cells.

Synthetic runs whose id- and title-matched metrics differ (title > id, as where several items share the
target's title); each table's cell beside the published value must be the one of the row's own matching.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from latentrec.eval.significance import mean_std
from latentrec.report import flr, latentr3
from latentrec.report.common import load_runs

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")
N = 12


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load((ROOT / "config" / "paper_results.yaml").read_text())


def _run(root: Path, dataset: str, method: str, seed: int, level: float) -> str:
    """A run whose title-matched metrics are about twice its id-matched ones (rows and aggregates)."""
    d = root / dataset / method / f"seed{seed}"
    d.mkdir(parents=True)
    rng = np.random.default_rng(zlib.crc32(f"{dataset}/{method}/{seed}".encode()))
    rows = {"row": np.arange(N)}
    for m in METRICS:
        rows[m] = (0.5 + rng.random(N)) * level
        rows[f"title_{m}"] = rows[m] * 2 + rng.random(N) * level
    rows = pd.DataFrame(rows)
    rows.to_parquet(d / "rows.parquet")
    metrics = {c: float(rows[c].mean()) for c in rows.columns if "@" in c}
    (d / "metrics.json").write_text(
        json.dumps({"dataset": dataset, "method": method, "seed": seed, "metrics": metrics})
    )
    return str(d / "metrics.json")


def _runs(root: Path, dataset: str, levels: dict[str, float], seeds=(0, 1)) -> list[str]:
    return [_run(root, dataset, m, s, v) for m, v in levels.items() for s in seeds]


def _ours(paths: list[str], method: str, metric: str) -> tuple[float, float]:
    """Mean ± std over seeds of `metric` (e.g. "title_NDCG@10") for `method`, from the metrics files."""
    ms = [json.loads(Path(p).read_text()) for p in paths]
    return mean_std(m["metrics"][metric] for m in ms if m["method"] == method)


def _row(md: str, start: str, after: str | None = None) -> dict[str, str]:
    """The Markdown table row starting with `start` (after the line containing `after`), keyed by its header."""
    lines = md.splitlines()
    i0 = next(i for i, ln in enumerate(lines) if after in ln) if after else 0
    i = next(i for i, ln in enumerate(lines) if i >= i0 and ln.startswith(start))
    sep = max(k for k in range(i) if lines[k].startswith("|---"))
    head = [c.strip() for c in lines[sep - 1].strip().strip("|").split("|")]
    cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
    assert len(head) == len(cells) and len(set(head)) == len(head), (head, cells)
    return dict(zip(head, cells))


def _beside(row: dict[str, str], column: str, published: str) -> str:
    """The cell of `column`, which must hold the published value `published` beside ours: ours part only."""
    cell = row[column]
    assert cell.endswith(f"({published})"), (column, cell)
    return cell.removesuffix(f"({published})").strip()


def _ms(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def _power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at a true mean difference `delta` (noncentral t, n - 1 df)."""
    df, nc = n - 1, delta * np.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(crit, df, nc) + np.nan_to_num(stats.nct.cdf(-crit, df, nc))


# ---------------------------------------------------------------------------------------- LatentR3
def test_table1_puts_each_published_value_beside_its_own_matching(tmp_path, paper):
    """A traditional baseline's published value sits beside ours matched by item id, an LLM row's beside ours
    matched by title; the other matching follows under its own labelled rows."""
    from latentrec.report.build import build_report

    paths = _runs(tmp_path / "results", "Toys_and_Games", {"SASRec": 0.05, "BIGRec": 0.06})
    stats_path = tmp_path / "results" / "Toys_and_Games" / "data" / "stats.json"
    stats_path.parent.mkdir()
    stats_path.write_text(
        json.dumps({"n_train": 1, "n_valid": 1, "n_test": 1, "n_items": 1, "n_users": 1, "mean_history_len": 1.0})
    )
    build_report(
        paths, [str(stats_path)], {"paper_results": str(ROOT / "config" / "paper_results.yaml")}, tmp_path / "tables"
    )
    md = (tmp_path / "tables" / "table1.md").read_text()
    first, second = md.split("ours under the other matching")
    pub = paper["latentr3_table1"]["Toys_and_Games"]
    for method, match, other in (("SASRec", "id", "title"), ("BIGRec", "title", "id")):
        key = {"id": "NDCG@10", "title": "title_NDCG@10"}
        mean, std = _ours(paths, method, key[match])
        row, published = _row(first, f"| {method} — by {match} |"), pub[method]["N@10"]
        assert row["N@10"] == f"{_ms(mean, std)} ({published:.4f}, {(mean - published) / published:+.0%})"
        assert f"| {method} — by {other} |" not in first
        assert _row(second, f"| {method} — by {other} |")["N@10"] == _ms(*_ours(paths, method, key[other]))
    csv = pd.read_csv(tmp_path / "tables" / "table1.csv")
    assert set(zip(csv.method, csv.published_match)) == {("SASRec", "id"), ("BIGRec", "title")}
    assert "by item id, following their original protocols" in md


def test_latentr3_gains_put_title_gain_beside_the_published_gain(tmp_path, paper):
    paths = _runs(tmp_path, "Toys_and_Games", {"BIGRec": 0.05, "BIGRec+LatentR3": 0.06})
    runs = load_runs(paths)
    df = latentr3.gains(runs, {"BIGRec+LatentR3": "BIGRec"}, paper["latentr3_table1"])
    md = latentr3.gains_markdown(df, "note", paper["latentr3_table1"])
    row = _row(md, "| Toys_and_Games | BIGRec+LatentR3 | BIGRec | N@10 |")
    head = list(row)
    # The published gain's left neighbour is ours under the same (title) matching.
    assert head[head.index("paper gain (title)") - 1] == "ours gain (title)"
    pub = paper["latentr3_table1"]["Toys_and_Games"]
    assert row["paper gain (title)"] == f"{pub['BIGRec+LatentR3']['N@10'] / pub['BIGRec']['N@10'] - 1:+.1%}"
    t_ours, t_base = _ours(paths, "BIGRec+LatentR3", "title_NDCG@10")[0], _ours(paths, "BIGRec", "title_NDCG@10")[0]
    i_ours, i_base = _ours(paths, "BIGRec+LatentR3", "NDCG@10")[0], _ours(paths, "BIGRec", "NDCG@10")[0]
    assert f"{t_ours / t_base - 1:+.1%}" != f"{i_ours / i_base - 1:+.1%}"  # the two matchings differ here
    assert row["ours (title)"] == f"{t_ours:.4f}" and row["backbone (title)"] == f"{t_base:.4f}"
    assert row["ours gain (title)"] == f"{t_ours / t_base - 1:+.1%}"
    # The id matching sits under its own labelled headers.
    assert row["ours (id)"] == f"{i_ours:.4f}" and row["backbone (id)"] == f"{i_base:.4f}"
    assert row["ours gain (id)"] == f"{i_ours / i_base - 1:+.1%}"
    # Each matching's paired t-test is on that matching's rows (pooled over seeds).
    rows = {
        m: pd.concat([pd.read_parquet(Path(p).with_name("rows.parquet")) for p in paths if f"/{m}/" in p])
        for m in ("BIGRec+LatentR3", "BIGRec")
    }
    for match, col in (("title", "title_NDCG@10"), ("id", "NDCG@10")):
        p = stats.ttest_rel(rows["BIGRec+LatentR3"][col], rows["BIGRec"][col]).pvalue
        assert row[f"p ({match})"] == f"{p:.2g}"
        # Beside it the test's minimum detectable effect: 80 % power there, from the differences' sd and n.
        diff = rows["BIGRec+LatentR3"][col].to_numpy() - rows["BIGRec"][col].to_numpy()
        mde, sd = float(row[f"MDE ({match})"].split()[0]), float(np.std(diff, ddof=1))
        assert _power(mde - 5e-5, sd, len(diff)) < 0.8 < _power(mde + 5e-5, sd, len(diff))  # printed to 4 decimals
    assert "title string" in md  # the note says which matching the published values use


def test_gains_rows_of_a_method_not_in_the_paper_say_so(tmp_path, paper):
    """paper.yaml's Gaussian-policy row is labelled by its display name in the gains table (and Table 1)."""
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    label = cfg["methods"]["BIGRec+LatentR3-GaussPolicy"]["display_name"]
    assert "not the paper's method" in label
    assert cfg["report"]["latentr3"]["pairs"]["BIGRec+LatentR3-GaussPolicy"] == "BIGRec"
    paths = _runs(tmp_path, "Toys_and_Games", {"BIGRec": 0.05, "BIGRec+LatentR3-GaussPolicy": 0.06})
    df = latentr3.gains(load_runs(paths), {"BIGRec+LatentR3-GaussPolicy": "BIGRec"}, paper["latentr3_table1"])
    md = latentr3.gains_markdown(df, "note", paper["latentr3_table1"], {"BIGRec+LatentR3-GaussPolicy": label})
    row = _row(md, f"| Toys_and_Games | {label} | BIGRec | N@10 |")
    assert row["paper gain (title)"] == "–"  # no published value to compare with


def test_latentr3_ablation_puts_title_values_beside_the_published_ones(tmp_path, paper):
    paths = _runs(tmp_path, "Toys_and_Games", {"BIGRec": 0.05, "BIGRec+LatentR3": 0.06})
    runs = load_runs(paths)
    rows = {"BIGRec+LatentR3": "LatentR3", "BIGRec": "w/o Reasoning"}
    df = latentr3.ablation(runs, rows, paper["latentr3_table2_ablation"])
    md = latentr3.ablation_markdown(df, "note", paper["latentr3_table2_ablation"])
    pub = paper["latentr3_table2_ablation"]["Toys_and_Games"]
    for method, name in rows.items():
        row = _row(md, f"| {name} ({method}) |")
        for pkey, metric in (("H@5", "HR@5"), ("N@10", "NDCG@10")):
            title, ident = _ours(paths, method, f"title_{metric}")[0], _ours(paths, method, metric)[0]
            assert f"{title:.4f}" != f"{ident:.4f}"
            assert _beside(row, f"{pkey} (title)", f"{pub[name][pkey]:.4f}") == f"{title:.4f}"
            assert row[f"{pkey} (id)"] == f"{ident:.4f}"  # labelled, and without the published value


# -------------------------------------------------------------------------------------------- FLR
TABLE2_CFG = {
    "rows": {"SASRec": "SASRec", "BIGRec": "BIGRec", "BIGRec+LatentR3": "LatentR3", "BIGRec+FLR": "FLR"},
    "method": "BIGRec+FLR",
    "baselines": ["SASRec", "BIGRec", "BIGRec+LatentR3"],
}


def _double_title(paths: list[str], method: str) -> None:
    """`method`'s runs become far better by title than by id (its title-matched scores doubled)."""
    for p in paths:
        m = json.loads(Path(p).read_text())
        if m["method"] == method:
            rows = pd.read_parquet(Path(p).with_name("rows.parquet"))
            for c in METRICS:
                rows[f"title_{c}"] *= 2
            rows.to_parquet(Path(p).with_name("rows.parquet"))
            m["metrics"] = {c: float(rows[c].mean()) for c in rows.columns if "@" in c}
            Path(p).write_text(json.dumps(m))


@pytest.fixture
def flr_tables(tmp_path, paper):
    """FLR Tables 2-4 built from runs on Video_Games where BIGRec is the strongest baseline by title but not
    by id."""
    paths = _runs(
        tmp_path / "results",
        "Video_Games",
        {"SASRec": 0.09, "BIGRec": 0.04, "BIGRec+FLR": 0.06, "FLR-reg-none": 0.055, "BIGRec+LatentR3": 0.05},
    )
    _double_title(paths, "BIGRec")
    cfg = {
        "table2": TABLE2_CFG,
        "table3": {
            "rows": {"FLR-reg-none": "none", "BIGRec+FLR": "attn_div+orth+sparse"},
            "datasets": ["Video_Games", "Toys_and_Games"],
        },
        "table4": ["BIGRec+LatentR3", "BIGRec+FLR", "FLR+LR-GRPO", "FLR+FLR-GRPO"],
    }
    out = tmp_path / "tables"
    flr.build(paths, {}, [], [], cfg, paper, out)
    return paths, out


def test_flr_table2_puts_each_published_value_beside_its_own_matching(flr_tables, paper):
    paths, out = flr_tables
    md = (out / "flr_table2.md").read_text()
    pub = paper["flr_table2"]["Video_Games"]
    # SASRec was published matched by item id (its own protocol), the LLM rows by title string.
    for method, name, match in (
        ("BIGRec+FLR", "FLR", "title"),
        ("SASRec", "SASRec", "id"),
        ("BIGRec", "BIGRec", "title"),
    ):
        row = _row(md, f"| {name} ({method}) |")
        assert row["seeds"] == "2" and row["published by"] == match
        other = "id" if match == "title" else "title"
        for pkey, metric in (("H@10", "HR@10"), ("N@10", "NDCG@10")):
            ours = _ours(paths, method, metric if match == "id" else f"title_{metric}")
            rest = _ours(paths, method, f"title_{metric}" if match == "id" else metric)
            assert _beside(row, f"{pkey} ({match})", f"{pub[name][pkey]:.4f}") == _ms(*ours)
            assert row[f"{pkey} ({other})"] == _ms(*rest)  # labelled, and without the published value


def test_flr_table2_picks_the_strongest_baseline_on_each_rows_published_matching(flr_tables):
    paths, out = flr_tables
    md = (out / "flr_table2.md").read_text()
    published = {"SASRec": "NDCG@10", "BIGRec": "title_NDCG@10", "BIGRec+LatentR3": "title_NDCG@10"}
    as_published = {m: _ours(paths, m, col)[0] for m, col in published.items()}
    by_title = {m: _ours(paths, m, "title_NDCG@10")[0] for m in published}
    # The premise: by title alone SASRec would be picked; its published (id) N@10 loses to BIGRec's title one.
    assert max(by_title, key=by_title.get) == "SASRec" and max(as_published, key=as_published.get) == "BIGRec"
    row = _row(md, "| Video_Games |", after="FLR against the strongest baseline")
    assert row["baseline"] == "BIGRec" and row["picked by"] == "N@10 (title)" and row["metric"] == "H@5"
    assert set(pd.read_csv(out / "flr_table2_tests.csv").baseline) == {"BIGRec"}


def test_flr_table2_tests_use_title_and_label_id(flr_tables):
    paths, out = flr_tables
    md = (out / "flr_table2.md").read_text()
    row = _row(md, "| Video_Games | BIGRec | N@10 (title) | N@10 |", after="FLR against the strongest baseline")
    for match, col in (("title", "title_NDCG@10"), ("id", "NDCG@10")):
        ours, base = _ours(paths, "BIGRec+FLR", col)[0], _ours(paths, "BIGRec", col)[0]
        assert row[f"FLR ({match})"] == f"{ours:.4f}" and row[f"baseline ({match})"] == f"{base:.4f}"
        assert row[f"improvement ({match})"] == f"{ours / base - 1:+.1%}"
        seeds = (
            [json.loads(Path(p).read_text())["metrics"][col] for p in paths if "/BIGRec+FLR/" in p],
            [json.loads(Path(p).read_text())["metrics"][col] for p in paths if "/BIGRec/" in p],
        )
        assert row[f"p over seeds ({match})"] == f"{stats.ttest_rel(*seeds).pvalue:.2g}"
        sd = float(np.std(np.subtract(*seeds), ddof=1))  # 2 seeds: the MDE of the seed test has 80 % power
        mde = float(row[f"MDE over seeds ({match})"].split()[0])
        assert _power(mde - 5e-5, sd, 2) < 0.8 < _power(mde + 5e-5, sd, 2)  # printed to 4 decimals
    assert row["FLR (title)"] != row["FLR (id)"]


def test_flr_table3_puts_title_values_beside_the_published_ones(flr_tables, paper):
    paths, out = flr_tables
    md = (out / "flr_table3.md").read_text()
    pub = paper["flr_table3_regularizer_ablation"]
    for method, combo in (("FLR-reg-none", "none"), ("BIGRec+FLR", "attn_div+orth+sparse")):
        row = _row(md, f"| {combo} ({method}) |", after="### Video_Games")
        for j, (pkey, metric) in enumerate(
            (("H@5", "HR@5"), ("H@10", "HR@10"), ("N@5", "NDCG@5"), ("N@10", "NDCG@10"))
        ):
            title, ident = _ours(paths, method, f"title_{metric}"), _ours(paths, method, metric)
            assert _beside(row, f"{pkey} (title)", f"{pub[combo][j]:.4f}") == _ms(*title)  # Games: columns 0-3
            assert row[f"{pkey} (id)"] == _ms(*ident)


def test_flr_table4_puts_title_values_beside_the_published_ones(flr_tables, paper):
    paths, out = flr_tables
    md = (out / "flr_table4.md").read_text()
    pub = paper["flr_table4_grpo"]["Video_Games"]
    for i, (method, column) in enumerate((("BIGRec+LatentR3", "LatentR3"), ("BIGRec+FLR", "FLR"))):
        row = _row(md, f"| {column} ({method}) |")
        for pkey, metric in (("H@5", "HR@5"), ("N@10", "NDCG@10")):
            title, ident = _ours(paths, method, f"title_{metric}"), _ours(paths, method, metric)
            assert _beside(row, f"{pkey} (title)", f"{pub[pkey][i]:.4f}") == _ms(*title)
            assert row[f"{pkey} (id)"] == _ms(*ident)
    csv = pd.read_csv(out / "flr_table4.csv")
    assert {"title_mean", "title_std", "id_mean", "id_std", "paper"} <= set(csv.columns)

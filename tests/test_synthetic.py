"""The synthetic default dataset: raw 2018 formats, determinism, planted faults and learnable structure."""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from latentrec.commands.data import add_parsers
from latentrec.data.synthetic import HTML_FRAGMENT, generate

SMALL = dict(n_users=300, n_items=120, n_genres=4)
REVIEW_FIELDS = {
    "overall": float,
    "verified": bool,
    "reviewTime": str,
    "reviewerID": str,
    "asin": str,
    "reviewerName": str,
    "reviewText": str,
    "summary": str,
    "unixReviewTime": int,
}
META_FIELDS = {
    "asin": str,
    "brand": str,
    "category": list,
    "price": str,
    "rank": str,
    "also_buy": list,
    "description": list,
}


def read_lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def default_files(tmp_path_factory):
    """The default-size dataset, generated once for the module."""
    d = tmp_path_factory.mktemp("synthetic")
    summary = generate(d / "Synthetic_5.json.gz", d / "meta_Synthetic.json.gz")
    return d, summary, read_lines(d / "Synthetic_5.json.gz"), read_lines(d / "meta_Synthetic.json.gz")


@pytest.fixture(scope="module")
def reviews(default_files):
    return default_files[2]


@pytest.fixture(scope="module")
def meta(default_files):
    return {m["asin"]: m for m in default_files[3]}


@pytest.fixture(scope="module")
def histories(reviews):
    """reviewerID -> [(unixReviewTime, asin)] in chronological order."""
    out = defaultdict(list)
    for r in reviews:
        out[r["reviewerID"]].append((r["unixReviewTime"], r["asin"]))
    return {u: sorted(h) for u, h in out.items()}


# ----------------------------------------------------------------------------- files and determinism


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    paths = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        paths[name] = (tmp_path / name / "X_5.json.gz", tmp_path / name / "meta_X.json.gz")
        generate(*paths[name], seed=seed, **SMALL)
    for i in range(2):
        assert paths["a"][i].read_bytes() == paths["b"][i].read_bytes()
        assert paths["a"][i].read_bytes() != paths["c"][i].read_bytes()
    # No temporary siblings are left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["X_5.json.gz", "meta_X.json.gz"]


def test_summary_matches_files(default_files, reviews):
    _, summary, _, meta_lines = default_files
    assert summary["n_reviews"] == len(reviews)
    assert summary["n_users"] == len({r["reviewerID"] for r in reviews})
    assert summary["n_items"] == len({r["asin"] for r in reviews})
    assert summary["n_meta_items"] == len(meta_lines) == 800
    assert sum(summary["reviews_per_year"].values()) == len(reviews)


def test_cli_writes_both_files(tmp_path):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(
        ["synthesize", "--reviews", str(tmp_path / "r.json.gz"), "--meta", str(tmp_path / "m.json.gz"),
         "--n-users", "200", "--n-items", "80", "--n-genres", "3", "--seed", "1",
         "--start", "2015-01", "--end", "2016-12"]
    )  # fmt: skip
    assert args.func(args) == 0
    days = [r["unixReviewTime"] for r in read_lines(tmp_path / "r.json.gz")]
    assert datetime(2015, 1, 1, tzinfo=timezone.utc).timestamp() <= min(days)
    assert max(days) < datetime(2017, 1, 1, tzinfo=timezone.utc).timestamp()
    assert len(read_lines(tmp_path / "m.json.gz")) == 80


# ----------------------------------------------------------------------------- formats


def test_review_lines_have_the_2018_fields(reviews):
    for r in reviews:
        for field, typ in REVIEW_FIELDS.items():
            assert isinstance(r[field], typ), (field, r)
        assert r["overall"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert re.fullmatch(r"A[A-Z0-9]{12,13}", r["reviewerID"])
        assert re.fullmatch(r"B0[A-Z0-9]{8}", r["asin"])
        assert r["reviewText"] and r["summary"] and r["reviewerName"]


def test_review_time_is_midnight_utc_and_matches_text(reviews):
    for r in reviews:
        ts = datetime.fromtimestamp(r["unixReviewTime"], tz=timezone.utc)
        assert (ts.hour, ts.minute, ts.second) == (0, 0, 0)
        # "%m %-d, %Y": zero-padded month, unpadded day, e.g. "09 1, 2016".
        assert r["reviewTime"] == f"{ts.month:02d} {ts.day}, {ts.year}"
        assert datetime(2014, 1, 1, tzinfo=timezone.utc) <= ts < datetime(2018, 11, 1, tzinfo=timezone.utc)


def test_reviews_grouped_by_sorted_asin(reviews):
    asins = [r["asin"] for r in reviews]
    assert asins == sorted(asins)


def test_meta_lines_have_the_2018_fields(meta, reviews):
    assert {r["asin"] for r in reviews} <= set(meta)
    for m in meta.values():
        for field, typ in META_FIELDS.items():
            assert isinstance(m[field], typ), (field, m)
        assert m["category"][0] == "CDs & Vinyl" and len(m["category"]) >= 2
        assert re.fullmatch(r"\$\d+\.\d\d", m["price"])
        assert all(a in meta for a in m["also_buy"])
        assert "title" not in m or isinstance(m["title"], str)


def test_titles_are_readable(meta):
    titles = [m["title"] for m in meta.values() if "title" in m]
    clean = [t for t in titles if re.fullmatch(r"[A-Za-z0-9 ,.'&:()\-]+", t) and 2 <= len(t.split()) <= 20]
    assert len(clean) >= 0.95 * len(titles)
    assert any(" Vol. 2" in t for t in titles)  # numbered series are visible in the titles


def test_meta_faults_are_present(meta):
    titles = [m.get("title") for m in meta.values()]
    assert sum(t == HTML_FRAGMENT for t in titles) >= 1
    assert sum(t is None for t in titles) >= 1
    assert any(t and ("&amp;" in t or "&quot;" in t) for t in titles)
    assert any(t and len(t.split()) > 20 for t in titles)
    # A duplicate title on different asins by different artists ("Greatest Hits").
    brands = defaultdict(set)
    for m in meta.values():
        if "title" in m:
            brands[m["title"]].add(m["brand"])
    assert any(len(b) > 1 for b in brands.values())


# ----------------------------------------------------------------------------- structure


def test_every_user_and_item_has_five_reviews(reviews, histories):
    assert min(len(h) for h in histories.values()) >= 5
    assert min(Counter(r["asin"] for r in reviews).values()) >= 5
    sizes = np.array([len(h) for h in histories.values()])
    assert np.mean(sizes <= 30) > 0.99 and np.median(sizes) < np.mean(sizes)  # 5-30, right-skewed


def test_activity_grows_over_the_years(default_files):
    per_year = default_files[1]["reviews_per_year"]
    assert per_year[2014] < per_year[2015] < per_year[2016] < per_year[2017]
    assert per_year[2018] / 10 > per_year[2016] / 12  # 2018 holds ten months


def test_users_have_stable_genre_tastes(meta, histories):
    genre = {a: m["category"][1] for a, m in meta.items()}
    same = total = 0
    for h in histories.values():
        for (_, a), (_, b) in zip(h, h[1:]):
            same += genre[a] == genre[b]
            total += 1
    share = Counter(genre[a] for h in histories.values() for _, a in h)
    chance = sum((c / sum(share.values())) ** 2 for c in share.values())
    assert same / total > max(0.5, 2.5 * chance)


def _next_album(meta) -> dict[str, str]:
    """asin -> the same artist's next album by release date (from the meta 'brand' and 'date')."""
    by_brand = defaultdict(list)
    for a, m in meta.items():
        by_brand[m["brand"]].append((datetime.strptime(m["date"], "%B %d, %Y"), a))
    out = {}
    for albums in by_brand.values():
        albums.sort()
        out.update({a: b for (_, a), (_, b) in zip(albums, albums[1:])})
    return out


def test_sequels_follow_in_order(meta, histories):
    nxt = _next_album(meta)
    in_order = reversed_ = immediate = pairs = 0
    for h in histories.values():
        when = {a: t for t, a in h}
        for a, b in nxt.items():
            if a in when and b in when:
                in_order += when[a] < when[b]
                reversed_ += when[a] > when[b]
        for (_, a), (_, b) in zip(h, h[1:]):
            immediate += nxt.get(a) == b
            pairs += 1
    assert in_order > 5 * reversed_
    assert immediate / pairs > 0.15  # "bought Vol. 1, next buys Vol. 2" is common


def test_popularity_is_skewed(reviews):
    counts = np.sort(np.array(list(Counter(r["asin"] for r in reviews).values())))[::-1]
    top = counts[: max(1, len(counts) // 10)].sum()
    assert top / counts.sum() > 0.3


def test_next_item_model_beats_mostpop(histories):
    """Leave-last-out: an item-to-item transition model must clearly beat MostPop at HR@10."""
    trans = defaultdict(Counter)
    pop = Counter()
    for h in histories.values():
        seq = [a for _, a in h[:-1]]
        pop.update(seq)
        for a, b in zip(seq, seq[1:]):
            trans[a][b] += 1
    top_pop = [a for a, _ in pop.most_common()]
    hit_pop = hit_seq = 0
    for h in histories.values():
        seen = {a for _, a in h[:-1]}
        target, last = h[-1][1], h[-2][1]
        ranked = [a for a, _ in trans[last].most_common() if a not in seen]
        ranked += [a for a in top_pop if a not in seen and a not in ranked]
        hit_seq += target in ranked[:10]
        hit_pop += target in [a for a in top_pop if a not in seen][:10]
    n = len(histories)
    assert hit_seq / n > 1.5 * hit_pop / n + 0.05


def _kcore_items(reviews, titled: set[str], start: datetime, k: int = 5) -> int:
    """Items left by a strict k-core over the titled reviews from `start` up to 2018-11-01."""
    lo, hi = start.timestamp(), datetime(2018, 11, 1, tzinfo=timezone.utc).timestamp()
    rows = [(r["reviewerID"], r["asin"]) for r in reviews if r["asin"] in titled and lo <= r["unixReviewTime"] <= hi]
    while True:
        u, i = Counter(x for x, _ in rows), Counter(y for _, y in rows)
        kept = [(x, y) for x, y in rows if u[x] >= k and i[y] >= k]
        if len(kept) == len(rows):
            return len({y for _, y in rows})
        rows = kept


def test_window_backoff_needs_a_few_steps(reviews, meta):
    """The default config (window 2017-10..2018-11, min_items 300) must back off towards 2016."""
    titled = {a for a, m in meta.items() if "title" in m and "<span" not in m["title"]}
    assert _kcore_items(reviews, titled, datetime(2017, 10, 1, tzinfo=timezone.utc)) < 300
    assert _kcore_items(reviews, titled, datetime(2016, 1, 1, tzinfo=timezone.utc)) >= 300

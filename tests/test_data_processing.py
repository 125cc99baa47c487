"""The vectorised data stage against a plain step-by-step restatement of the reference (naive_process)."""

import filecmp
import gzip
import json
from datetime import datetime, timezone

import pytest

from latentrec.commands.main import main
from latentrec.data.build import build_from_raw
from latentrec.data.filtering import FilterConfig, clean_title_reference, select_titles, step_back
from latentrec.data.processed_io import export_csv_dataset
from tests.conftest import write_jsonl_gz
from tests.naive_process import naive_process


def _beauty_meta(tmp_path, reviews_path):
    """The real All_Beauty reviews have no meta file: give each asin a title, with the reference's faults."""
    asins = []
    with gzip.open(reviews_path, "rt") as fh:
        for line in fh:
            a = json.loads(line)["asin"]
            if a not in asins:
                asins.append(a)
    meta = []
    for i, a in enumerate(asins):
        if i % 17 == 3:
            meta.append({"asin": a})  # no title
        elif i % 19 == 4:
            meta.append({"asin": a, "title": '<span id="x">junk</span>'})
        elif i % 13 == 5:
            meta.append({"asin": a, "title": "Greatest Hits"})  # duplicate titles survive
        else:
            meta.append({"asin": a, "title": f" &quot;Product {i} &amp; Co&quot; "})
    return write_jsonl_gz(tmp_path / "meta_All_Beauty.json.gz", meta)


def _compare_with_naive(tmp_path, reviews, meta, processing, **naive_kw):
    ds, prov = build_from_raw(reviews, meta, processing)
    ours = tmp_path / "ours"
    export_csv_dataset(ds, ours)
    ref = tmp_path / "naive"
    ref.mkdir()
    name = naive_process(reviews, meta, ref, **naive_kw)
    for f in ("info.txt", "train.csv", "valid.csv", "test.csv"):
        assert filecmp.cmp(ours / f, ref / f, shallow=False), f"{f} differs from the naive reference"
    return ds, prov, name


def test_real_beauty_reviews_match_naive_reference_with_backoff(tmp_path, requires_beauty):
    meta = _beauty_meta(tmp_path, requires_beauty)
    processing = {"min_items": 30, "backoff_months": 3, "window_start": "2017-10", "window_end": "2018-11"}
    ds, prov, name = _compare_with_naive(tmp_path, requires_beauty, meta, processing, min_items=30)
    assert len(prov["attempts"]) > 1, "the back-off rule was not exercised"
    assert prov["name"].format(category="X") == name
    assert ds.n_items >= 30
    assert prov["window"]["start"] != "2017-10" and int(prov["window"]["start"][:4]) > 2000
    # Strict 5-core inside the chosen window: every kept item is a target or history item ≥ 5 times overall.
    assert len(ds.train) > len(ds.valid) > 0


def test_timezone_moves_the_end_bound(tmp_path):
    # Reviews dated exactly 2018-11-01 00:00 UTC are inside [start, end] in UTC but after the end in UTC+8.
    end_day = int(datetime(2018, 11, 1, tzinfo=timezone.utc).timestamp())
    recs, meta = [], []
    for i in range(6):
        meta.append({"asin": f"I{i}", "title": f"Item number {i}"})
        for u in range(6):
            recs.append(
                {
                    "reviewerID": f"U{u}",
                    "asin": f"I{i}",
                    "overall": 5.0,
                    "unixReviewTime": end_day if (i == 5 and u == 0) else end_day - 86400 * (i * 6 + u + 1),
                }
            )
    r = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    m = write_jsonl_gz(tmp_path / "m.json.gz", meta)
    for tz, expected in (("UTC", 36), ("Asia/Shanghai", 35)):
        cfg = {"min_items": 1, "timezone": tz}
        ds, prov = build_from_raw(r, m, cfg)
        n = len(ds.train) + len(ds.valid) + len(ds.test) + 6  # + first interaction of each user
        assert n == expected, tz
        sub = tmp_path / tz.replace("/", "_")
        sub.mkdir()
        _compare_with_naive(sub, r, m, cfg, min_items=1, tz=tz)


def test_reference_title_normalisation_order():
    assert clean_title_reference("&quot;Foo &quot; ") == "Foo "
    assert clean_title_reference(" &amp;Bar&amp; ") == "&Bar&"
    titles, removed = select_titles(
        [
            ("a", "ok title"),
            ("b", None),
            ("c", '<span id="1">'),
            ("d", "x"),
            ("e", " ".join(["w"] * 21)),
            ("f", "first"),
            ("f", "second"),
            ("g", "valid"),
            ("g", None),
        ],
        FilterConfig(),
    )
    assert titles == {"a": "ok title", "f": "second", "g": "valid"}
    assert removed == {"b", "c", "d", "e", "g"}  # g: a bad line removes it even though another line is valid


def test_strict_cleaning_unescapes_drops_markup_and_dedups(tmp_path):
    titles, removed = select_titles(
        [
            ("a", "Blue &Ouml;yster Cult"),
            ("b", '<span class="a-size-medium a-color-secondary a-text-normal'),
            ("c", "Honky  Ch&acirc;teau"),
        ],
        FilterConfig(title_cleaning="strict"),
    )
    assert titles == {"a": "Blue Öyster Cult", "c": "Honky Château"}
    assert removed == {"b"}


@pytest.mark.parametrize("mode", ["reference", "strict"])
def test_titles_with_tabs_and_line_breaks_are_made_one_line(tmp_path, mode):
    """A raw title with a line break or tab used to pass the filter and corrupt info.txt, which our own
    importer then rejected; both modes now collapse such whitespace (config/README.md), and the export
    imports again unchanged."""
    from latentrec.data.processed_io import import_csv_dataset

    raws = ["Live\nat Leeds", "Side A\tSide B", " Tabs \t\r\n", "Plain  title", "Null\x00byte", "Sep\u2028line"]
    assert [clean_title_reference(t) for t in raws] == [
        "Live at Leeds",
        "Side A Side B",
        "Tabs",
        "Plain  title",
        "Null byte",
        "Sep line",
    ]
    recs, meta = [], []
    for i, raw in enumerate(raws):
        meta.append({"asin": f"I{i}", "title": raw})
        recs += [
            {"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5.0, "unixReviewTime": 1520000000 + 86400 * (i * 6 + u)}
            for u in range(6)
        ]
    r = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    m = write_jsonl_gz(tmp_path / "m.json.gz", meta)
    ds, _ = build_from_raw(r, m, {"min_items": 1, "title_cleaning": mode})
    expected = {
        "Live at Leeds",
        "Side A Side B",
        "Tabs",
        "Null byte",
        "Sep line",
        "Plain  title" if mode == "reference" else "Plain title",
    }
    assert set(ds.titles) == expected
    export_csv_dataset(ds, tmp_path / "csv")
    assert len((tmp_path / "csv" / "info.txt").read_text().splitlines()) == len(raws)
    assert import_csv_dataset(tmp_path / "csv").titles == ds.titles


def test_step_back_matches_reference_three_month_rule():
    assert step_back(2017, 10, 3) == (2017, 7)
    assert step_back(2017, 1, 3) == (2016, 10)
    assert step_back(2017, 3, 3) == (2016, 12)
    assert step_back(2017, 10, 12) == (2016, 10)

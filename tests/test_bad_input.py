"""Bad input fails loudly, names the file and line, and leaves nothing half-written."""

import gzip
import json
from pathlib import Path

import pytest
import yaml

from latentrec.commands.main import main
from latentrec.data.amazon import read_reviews
from latentrec.errors import InputError
from tests.conftest import write_jsonl_gz

ROOT = Path(__file__).resolve().parents[1]


def _good_reviews(n=30):
    return [
        {"reviewerID": f"U{i % 6}", "asin": f"I{i % 5}", "overall": 4.0, "unixReviewTime": 1520000000 + i}
        for i in range(n)
    ]


def _run_process(tmp_path, reviews, meta):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "process",
                "--reviews",
                str(reviews),
                "--meta",
                str(meta),
                "--category",
                "X",
                "--cfg",
                json.dumps({"min_items": 1}),
                "--out",
                str(out),
            ]
        )
    assert exc.value.code == 2
    assert not out.exists() or not any(out.rglob("*")), "a failed run left files behind"


def _meta(tmp_path):
    return write_jsonl_gz(tmp_path / "meta.json.gz", [{"asin": f"I{i}", "title": f"Title {i}"} for i in range(5)])


def test_truncated_gzip(tmp_path, capsys):
    path = write_jsonl_gz(tmp_path / "r.json.gz", _good_reviews(3000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"r\.json\.gz:\d+: the gzip stream is truncated"):
        read_reviews(path)
    _run_process(tmp_path, path, _meta(tmp_path))
    assert "truncated" in capsys.readouterr().err


def test_malformed_json_line_names_line(tmp_path):
    path = tmp_path / "r.json.gz"
    lines = [json.dumps(r) for r in _good_reviews(5)]
    lines[2] = lines[2][:-5]  # cut the closing of line 3
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"r\.json\.gz:3: malformed JSON"):
        read_reviews(path)
    _run_process(tmp_path, path, _meta(tmp_path))


def test_missing_field_names_field_and_line(tmp_path):
    recs = _good_reviews(5)
    del recs[3]["overall"]
    path = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    with pytest.raises(InputError, match=r"r\.json\.gz:4: review record lacks field\(s\) \['overall'\]"):
        read_reviews(path)


def test_empty_after_filtering(tmp_path, capsys):
    # Every review is far outside the window: nothing survives, whatever the back-off.
    recs = [dict(r, unixReviewTime=1600000000000) for r in _good_reviews()]
    path = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    _run_process(tmp_path, path, _meta(tmp_path))
    err = capsys.readouterr().err
    # (the back-off now ends with a min_items error before the empty-result check of build.py)
    assert "no item survives" in err and "r.json.gz" in err or "0 items survive the 5-core" in err


def test_missing_file(tmp_path, capsys):
    _run_process(tmp_path, tmp_path / "absent.json.gz", _meta(tmp_path))
    assert "absent.json.gz" in capsys.readouterr().err


def test_config_key_of_wrong_type_is_rejected_by_schema():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(dict(config), str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # the default is valid
    config["processing"]["k_core"] = "five"
    with pytest.raises(WorkflowError, match="k_core"):
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))


def test_semantic_config_errors():
    from latentrec.config_checks import validate_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_config(config)
    config["run_methods"] = ["NoSuchMethod"]
    with pytest.raises(InputError, match="NoSuchMethod"):
        validate_config(config)


def test_method_seeds_and_init_seed_are_checked():
    from latentrec.config_checks import validate_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["methods"]["BIGRec"]["seeds"] = [0, 3]  # 3 is not a seed of the run
    with pytest.raises(InputError, match=r"methods\.BIGRec\.seeds.*\[3\]"):
        validate_config(config)
    del config["methods"]["BIGRec"]["seeds"]
    config["llm"]["latent"]["LatentR3"]["init_seed"] = 0  # without init: sft it would be ignored
    with pytest.raises(InputError, match="init_seed"):
        validate_config(config)
    config["llm"]["latent"]["LatentR3"]["init"] = "sft"
    validate_config(config)


def test_bad_info_file_names_line(tmp_path):
    from latentrec.data.processed_io import read_info

    p = tmp_path / "info.txt"
    p.write_text("Good title\t0\nno tab here\n")
    with pytest.raises(InputError, match=r"info\.txt:2"):
        read_info(p)


# ----------------------------------------------------------------------------- raw-data edge cases (issue 18.5)


def _reviews_text(tmp_path, lines: list[str]) -> Path:
    path = tmp_path / "r.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "field, raw, message",
    [
        ("unixReviewTime", "1e30", r"r\.json\.gz:3: unixReviewTime 1e\+30 is out of range for a Unix time in seconds"),
        ("unixReviewTime", "Infinity", r"r\.json\.gz:3: unixReviewTime inf is not an integer Unix time in seconds"),
        ("unixReviewTime", "1520000000.5", r"r\.json\.gz:3: unixReviewTime 1520000000\.5 is not an integer"),
        ("overall", '"NaN"', r"r\.json\.gz:3: overall 'NaN' is not a finite number"),
        ("overall", "true", r"r\.json\.gz:3: overall True is not a finite number"),
        ("reviewerID", "null", r"r\.json\.gz:3: reviewerID None is not a non-empty string"),
        ("asin", "[1, 2]", r"r\.json\.gz:3: asin \[1, 2\] is not a non-empty string"),
    ],
)
def test_untrustworthy_review_values_name_the_line(tmp_path, capsys, field, raw, message):
    lines = [json.dumps(r) for r in _good_reviews(5)]
    rec = _good_reviews(5)[2]
    lines[2] = json.dumps({k: v for k, v in rec.items() if k != field})[:-1] + f', "{field}": {raw}}}'
    path = _reviews_text(tmp_path, lines)
    with pytest.raises(InputError, match=message):
        read_reviews(path)
    _run_process(tmp_path, path, _meta(tmp_path))
    assert "r.json.gz:3:" in capsys.readouterr().err


def test_non_utf8_names_the_raw_line(tmp_path):
    """The bad byte sits far past the first decoding buffer: the line must still be exact."""
    lines = [json.dumps(r).encode() for r in _good_reviews(9000)]
    lines[8702] = lines[8702].replace(b'"U', b'"\xff\xfeU', 1)
    path = tmp_path / "r.json.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match=r"r\.json\.gz:8703: not UTF-8 text \(byte 0xff"):
        read_reviews(path)


def test_list_title_is_rejected_with_its_line(tmp_path, capsys):
    meta = write_jsonl_gz(
        tmp_path / "meta.json.gz", [{"asin": "I0", "title": "Fine"}, {"asin": "I1", "title": ["Side A", "Side B"]}]
    )
    from latentrec.data.amazon import read_meta_titles

    with pytest.raises(InputError, match=r"meta\.json\.gz:2: title of I1 is a list, not a string"):
        read_meta_titles(meta)
    _run_process(tmp_path, write_jsonl_gz(tmp_path / "r.json.gz", _good_reviews()), meta)
    assert "meta.json.gz:2:" in capsys.readouterr().err


def test_directory_as_file_says_so(tmp_path, capsys):
    folder = tmp_path / "reviews_dir.json.gz"
    folder.mkdir()
    _run_process(tmp_path, folder, _meta(tmp_path))
    err = capsys.readouterr().err
    assert f"error: {folder}: is a directory, not a file" in err and "truncated" not in err


def test_meta_without_usable_titles_says_so(tmp_path, capsys):
    meta = write_jsonl_gz(
        tmp_path / "meta.json.gz", [{"asin": f"I{i}", "title": t} for i, t in enumerate(["", " ", '""', "x", ""])]
    )
    _run_process(tmp_path, write_jsonl_gz(tmp_path / "r.json.gz", _good_reviews()), meta)
    err = capsys.readouterr().err
    assert "none of its 5 meta records has a usable title" in err and "widen the window" not in err


def test_meta_of_another_category_says_so(tmp_path, capsys):
    meta = write_jsonl_gz(tmp_path / "meta.json.gz", [{"asin": f"J{i}", "title": f"Other {i}"} for i in range(5)])
    _run_process(tmp_path, write_jsonl_gz(tmp_path / "r.json.gz", _good_reviews()), meta)
    err = capsys.readouterr().err
    assert "none of its 5 reviewed items has a usable title" in err and "widen the window" not in err


# ----------------------------------------------------------------------------- bad processed splits (issue 18.4)


def _split(tmp_path) -> Path:
    """A small valid split in the reference format (6 items, ratings and timestamps everywhere)."""
    import pandas as pd

    from latentrec.data.processed_io import ProcessedDataset, export_csv_dataset

    def rows(users, base):
        return pd.DataFrame(
            [
                {
                    "user_id": u,
                    "history_item_ids": [i % 6, (i + 1) % 6],
                    "item_id": (i + 2) % 6,
                    "history_ratings": [4.0, 5.0],
                    "rating": 3.0,
                    "history_timestamps": [base + i, base + i + 1],
                    "timestamp": base + i + 2,
                }
                for i, u in enumerate(users)
            ]
        )

    items = pd.DataFrame(
        {"item_id": range(6), "asin": [f"A{i}" for i in range(6)], "title": [f"Title {i}" for i in range(6)]}
    )
    ds = ProcessedDataset(
        items=items,
        train=rows(["u0", "u1", "u2", "u3"], 1500000000),
        valid=rows(["u4", "u5"], 1510000000),
        test=rows(["u6", "u7", "u8"], 1520000000),
    )
    folder = tmp_path / "split"
    export_csv_dataset(ds, folder)
    return folder


def _set_field(path: Path, line: int, column: str, value: str) -> None:
    """Rewrite one field of one CSV line (1-based, the header is line 1)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    rows[line - 1][rows[0].index(column)] = value
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_text(buf.getvalue(), newline="")


def _import(tmp_path, src, capsys) -> str:
    out = tmp_path / "imported"
    with pytest.raises(SystemExit) as exc:
        main(["import-csv", "--src", str(src), "--out", str(out)])
    assert exc.value.code == 2
    assert not out.exists() or not any(out.rglob("*")), "a failed import left files behind"
    return capsys.readouterr().err


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


def _bad_info_bytes(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[2] = b"Caf\xe9 Tacuba\t2"  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines))


def _info_line(line: int, text: str):
    def edit(path: Path) -> None:
        lines = path.read_text().split("\n")
        lines[line - 1] = text
        path.write_text("\n".join(lines))

    return edit


BAD_SPLITS = {
    "history id -1": (
        "test.csv",
        lambda p: _set_field(p, 3, "history_item_id", "[-1, 2]"),
        r"test\.csv:3: history item id -1 is not an item id: the info file has 6 items \(0\.\.5\)",
    ),
    "history id 99999": (
        "valid.csv",
        lambda p: _set_field(p, 2, "history_item_id", "[1, 99999]"),
        r"valid\.csv:2: history item id 99999 is not an item id",
    ),
    "target id 6": (
        "train.csv",
        lambda p: _set_field(p, 4, "item_id", "6"),
        r"train\.csv:4: item_id 6 is not an item id",
    ),
    "truncated csv": (
        "train.csv",
        _truncate,
        r"train\.csv:5: the last line does not end with a line break: the file looks truncated",
    ),
    "non-UTF-8 info": ("info.txt", _bad_info_bytes, r"info\.txt:3: not UTF-8 text \(byte 0xe9"),
    "history not a list": (
        "test.csv",
        lambda p: _set_field(p, 2, "history_item_id", "5"),
        r"test\.csv:2: column 'history_item_id' must be a list, got int",
    ),
    "history of strings": (
        "test.csv",
        lambda p: _set_field(p, 2, "history_item_id", "[1, '2']"),
        r"test\.csv:2: column 'history_item_id' holds '2', not an integer",
    ),
    "history of floats": (
        "test.csv",
        lambda p: _set_field(p, 2, "history_item_id", "[1, 2.0]"),
        r"test\.csv:2: column 'history_item_id' holds 2\.0, not an integer",
    ),
    "history not a literal": (
        "test.csv",
        lambda p: _set_field(p, 2, "history_item_id", "[1, 2"),
        r"test\.csv:2: column 'history_item_id' is not a Python literal",
    ),
    "empty rating": (
        "valid.csv",
        lambda p: _set_field(p, 3, "rating", ""),
        r"valid\.csv:3: 'history_rating' and 'rating' must both be given or both be empty",
    ),
    "NaN rating": (
        "valid.csv",
        lambda p: _set_field(p, 3, "rating", "nan"),
        r"valid\.csv:3: column 'rating' is not a finite number: 'nan'",
    ),
    "ratings of wrong length": (
        "valid.csv",
        lambda p: _set_field(p, 2, "history_rating", "[4.0]"),
        r"valid\.csv:2: column 'history_rating' has 1 entries but the history has 2",
    ),
    "float timestamp": (
        "test.csv",
        lambda p: _set_field(p, 4, "timestamp", "1520000002.5"),
        r"test\.csv:4: column 'timestamp' is not an integer: '1520000002\.5'",
    ),
    "float history timestamp": (
        "test.csv",
        lambda p: _set_field(p, 4, "history_timestamp", "[1.5, 2]"),
        r"test\.csv:4: column 'history_timestamp' holds 1\.5, not an integer",
    ),
    "unclosed quote": (
        "train.csv",
        lambda p: p.write_bytes(p.read_bytes().replace(b'"[0, 1]"', b'"[0, 1]', 1)),
        r"train\.csv:2: not a well-formed CSV row: .*a quote opened on this line is never closed",
    ),
    "unclosed quote in the last row": (
        "test.csv",
        lambda p: p.write_bytes(p.read_bytes().rstrip(b"\r\n").rsplit(b"\n", 1)[0] + b'\nu9,"[1, 2\r\n'),
        r"test\.csv:4: not a well-formed CSV row: unexpected end of data: a quote opened on this line is never closed",
    ),
    "missing field": (
        "train.csv",
        lambda p: p.write_bytes(p.read_bytes().replace(b",1500000002\r\n", b"\r\n", 1)),
        r"train\.csv:2: 10 field\(s\) where the header has 11",
    ),
    "conflicting asins": (
        "test.csv",
        lambda p: _set_field(p, 2, "item_asin", "B999"),
        r"test\.csv:3: item 2 has asin 'A2' here but 'B999' at line 2",
    ),
    "info id out of order": ("info.txt", _info_line(2, "Title 1\t7"), r"info\.txt:2: item id 7 where 1 was expected"),
    "info blank line": ("info.txt", _info_line(2, ""), r"info\.txt:2: empty line"),
    "title with a tab": (
        "info.txt",
        _info_line(2, "Title\tone\t1"),
        r"info\.txt:2: the title of item 1 contains '\\t'",
    ),
    "title split by a newline": (
        "info.txt",
        _info_line(2, "Title\n1\t1"),
        r"info\.txt:2: expected 'title<TAB>item_id', got 'Title'",
    ),
}


@pytest.mark.parametrize("case", BAD_SPLITS)
def test_bad_processed_split_is_rejected_with_file_and_line(tmp_path, capsys, case):
    from latentrec.data.processed_io import import_csv_dataset

    name, edit, message = BAD_SPLITS[case]
    src = _split(tmp_path)
    import_csv_dataset(src)  # the untouched split is fine
    edit(src / name)
    with pytest.raises(InputError, match=message):
        import_csv_dataset(src)
    err = _import(tmp_path, src, capsys)
    assert err.startswith("error: ") and str(src / name) in err, err


def test_long_titles_are_data_not_a_broken_quote(tmp_path):
    """Three 20,000-character titles in one valid history import (the history's title field is 60k long)."""
    from latentrec.data.processed_io import import_csv_dataset

    src = _split(tmp_path)
    long = ["x" * 20_000 + str(i) for i in range(3)]
    lines = (src / "info.txt").read_text().split("\n")
    for i in range(3):
        lines[i] = f"{long[i]}\t{i}"
    (src / "info.txt").write_text("\n".join(lines))
    for name in ("train.csv", "valid.csv", "test.csv"):
        import csv
        import io

        rows = list(csv.reader(io.StringIO((src / name).read_text(), newline="")))
        for col in ("history_item_title", "item_title"):
            if col not in rows[0]:
                continue
            j = rows[0].index(col)
            for r in rows[1:]:
                ids = rows[0].index("history_item_id" if col.startswith("history") else "item_id")
                id_list = eval(r[ids]) if col.startswith("history") else int(r[ids])  # noqa: S307 (test data)
                titles = [
                    long[i] if i < 3 else f"Title {i}" for i in (id_list if isinstance(id_list, list) else [id_list])
                ]
                r[j] = str(titles) if col.startswith("history") else titles[0]
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        (src / name).write_text(buf.getvalue(), newline="")
    ds = import_csv_dataset(src)
    assert ds.items.title.str.len().max() > 20_000


def test_gzipped_split_is_read_and_a_double_is_refused(tmp_path, capsys):
    import shutil

    from latentrec.data.processed_io import import_csv_dataset

    src = _split(tmp_path)
    plain = import_csv_dataset(src)
    for f in ("info.txt", "train.csv", "valid.csv", "test.csv"):
        with open(src / f, "rb") as fin, gzip.open(src / f"{f}.gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        (src / f).unlink()
    ds = import_csv_dataset(src)
    assert ds.items.equals(plain.items)
    for name in ("train", "valid", "test"):
        assert ds.split(name).equals(plain.split(name))
    out = tmp_path / "ok"
    main(["import-csv", "--src", str(src), "--out", str(out)])
    assert (out / "test.parquet").exists()

    (src / "test.csv").write_text("stale copy\n")
    assert "both test.csv and test.csv.gz exist" in _import(tmp_path, src, capsys)
    (src / "test.csv").unlink()
    data = (src / "valid.csv.gz").read_bytes()
    (src / "valid.csv.gz").write_bytes(data[: len(data) // 2])
    assert "valid.csv.gz:1: the gzip stream is truncated or corrupt" in _import(tmp_path, src, capsys)
    (src / "valid.csv.gz").unlink()
    err = _import(tmp_path, src, capsys)
    assert "valid.csv: file not found (nor valid.csv.gz)" in err

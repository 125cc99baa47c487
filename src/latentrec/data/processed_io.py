"""The processed-dataset contract: Parquet tables on disk, plus the BIGRec/D3/LatentR3 CSV format.

A processed dataset is a folder with
  items.parquet                 item_id (0..n-1), asin, title
  train|valid|test.parquet      one row per sample (see SAMPLE_COLUMNS)
Histories hold at most `history_len` item ids, oldest first. Timestamps and ratings may be null
(the published CDs train file has neither).

The CSV format (one `{split}.csv` per split and an `info.txt` of `title<TAB>item_id` lines) is the one
the reference repositories read and write; list columns are Python literals, parsed with
ast.literal_eval (never eval). Any of the four files may be gzipped (`train.csv.gz`, `info.txt.gz`).
Importing checks every field (ids in range, lists of the right type and length, finite ratings,
integer timestamps, UTF-8, no truncation) and names `file:line` of the first problem.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latentrec.data.split_files import INFO_FILE
from latentrec.errors import InputError
from latentrec.io_utils import atomic_path

SPLITS = ("train", "valid", "test")

SAMPLE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("history_item_ids", pa.list_(pa.int64())),
        ("item_id", pa.int64()),
        ("history_ratings", pa.list_(pa.float64())),
        ("rating", pa.float64()),
        ("history_timestamps", pa.list_(pa.int64())),
        ("timestamp", pa.int64()),
    ]
)
SAMPLE_COLUMNS = SAMPLE_SCHEMA.names
ITEM_SCHEMA = pa.schema([("item_id", pa.int64()), ("asin", pa.string()), ("title", pa.string())])

# Column order of the reference CSV files (REFERENCE.md §1.5).
CSV_COLUMNS = [
    "user_id",
    "item_asins",
    "item_asin",
    "history_item_id",
    "item_id",
    "history_item_title",
    "item_title",
    "history_rating",
    "rating",
    "history_timestamp",
    "timestamp",
]
CSV_REQUIRED = ["user_id", "history_item_id", "item_id"]


@dataclass
class ProcessedDataset:
    """Items plus the three sample tables of one dataset."""

    items: pd.DataFrame
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def n_items(self) -> int:
        return len(self.items)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @property
    def titles(self) -> list[str]:
        return self.items["title"].tolist()

    def validate(self, where: str = "dataset") -> None:
        ids = self.items["item_id"].to_numpy()
        if len(ids) == 0:
            raise InputError(f"{where}: the item table is empty")
        if not (ids == range(len(ids))).all():
            raise InputError(f"{where}: item ids must be 0..n-1 in order")
        n = len(ids)
        for name in SPLITS:
            df = self.split(name)
            if len(df) == 0:
                raise InputError(f"{where}: split {name!r} has no rows")
            bad = (df["item_id"] < 0) | (df["item_id"] >= n)
            if bad.any():
                raise InputError(f"{where}/{name}: target item id out of range at row {int(bad.idxmax())}")
            lens = df["history_item_ids"].map(len)
            if (lens == 0).any():
                raise InputError(f"{where}/{name}: empty history at row {int((lens == 0).idxmax())}")
            hist = np.fromiter((i for h in df["history_item_ids"] for i in h), dtype=np.int64, count=int(lens.sum()))
            bad_hist = (hist < 0) | (hist >= n)
            if bad_hist.any():
                row = int(np.searchsorted(np.cumsum(lens.to_numpy()), int(bad_hist.argmax()), side="right"))
                raise InputError(f"{where}/{name}: history item id out of range at row {row}")


def save_dataset(ds: ProcessedDataset, folder: str | os.PathLike) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_table(ds.items, ITEM_SCHEMA, folder / "items.parquet")
    for name in SPLITS:
        _write_table(ds.split(name), SAMPLE_SCHEMA, folder / f"{name}.parquet")


def _write_table(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def load_dataset(folder: str | os.PathLike) -> ProcessedDataset:
    folder = Path(folder)
    items = pd.read_parquet(folder / "items.parquet")
    splits = {name: pd.read_parquet(folder / f"{name}.parquet") for name in SPLITS}
    for df in splits.values():
        # Lists come back as numpy arrays; plain lists keep downstream code simple.
        for col in ("history_item_ids", "history_ratings", "history_timestamps"):
            df[col] = df[col].map(lambda v: None if v is None else list(v))
    return ProcessedDataset(items=items, **splits)


# ----------------------------------------------------------------------------- CSV format
#
# Every check below names the file and the line: a split is either imported whole or rejected with
# `file:line: what is wrong`, before anything is written. Files may be gzipped (`train.csv.gz`, ...).

_INT = re.compile(r"-?[0-9]{1,19}")
_INT64 = (-(2**63), 2**63 - 1)


def split_file(folder: str | os.PathLike, name: str) -> Path:
    """`folder/name`, or `folder/name.gz` when only that exists; an error when both or neither exist."""
    plain = Path(folder) / name
    gz = plain.with_name(plain.name + ".gz")
    if plain.exists() and gz.exists():
        raise InputError(f"{plain}: both {plain.name} and {gz.name} exist; keep one (they may differ)")
    if gz.exists() and not plain.exists():
        return gz
    if not plain.exists():
        raise InputError(
            f"{plain}: file not found (nor {gz.name}); a processed split needs {INFO_FILE} and "
            "train/valid/test CSVs, plain or gzipped"
        )
    return plain


def _lines(chunks: list[bytes]) -> int:
    return sum(c.count(b"\n") for c in chunks)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; a damaged stream names the line it breaks off in."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or err})") from None
    if path.suffix != ".gz":
        return raw
    out: list[bytes] = []
    while True:  # one pass per gzip member
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(raw))
        except zlib.error as err:
            what = "not a gzip file" if not out and not raw.startswith(b"\x1f\x8b") else f"corrupt ({err})"
            raise InputError(f"{path}:{_lines(out) + 1}: the gzip stream is {what}; copy the file again") from None
        if not d.eof:
            out.append(d.flush())
            raise InputError(
                f"{path}:{_lines(out) + 1}: the gzip stream is truncated or corrupt "
                "(it ends before its end marker); copy the file again"
            )
        raw = d.unused_data
        if not raw.strip(b"\x00"):  # gzip tolerates zero padding after the last member
            return b"".join(out)


def _read_text(path: str | os.PathLike) -> str:
    """The whole file as UTF-8 text (a BOM is dropped); a decoding error names its line."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}: {err.reason}); re-encode the file as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")
    if text and not text.endswith("\n"):
        raise InputError(
            f"{path}:{text.count(chr(10)) + 1}: the last line does not end with a line break: "
            "the file looks truncated; copy it again"
        )
    return text


def read_info(path: str | os.PathLike) -> pd.DataFrame:
    """Parse an info file: one `title<TAB>item_id` line per item, line k holding id k (from 0)."""
    rows = []
    lines = _read_text(path).split("\n")
    while lines and lines[-1] in ("", "\r"):
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if not line:
            raise InputError(
                f"{path}:{lineno}: empty line; the reference numbers items by line, so every id after it "
                "would shift: remove it"
            )
        title, sep, raw_id = line.rpartition("\t")
        if not sep:
            raise InputError(f"{path}:{lineno}: expected 'title<TAB>item_id', got {line[:80]!r}")
        if not _INT.fullmatch(raw_id):
            raise InputError(f"{path}:{lineno}: item id {raw_id[:80]!r} is not an integer")
        if int(raw_id) != len(rows):
            raise InputError(
                f"{path}:{lineno}: item id {raw_id} where {len(rows)} was expected: ids must be 0..n-1, "
                "one per line in order (the reference numbers items by line)"
            )
        if not title.strip():
            raise InputError(f"{path}:{lineno}: item {raw_id} has an empty title")
        bad = _CONTROL.search(title)
        if bad:
            raise InputError(
                f"{path}:{lineno}: the title of item {raw_id} contains {bad.group()!r}; the reference "
                "reads a title up to the first tab, so replace tabs and control characters with spaces"
            )
        rows.append((int(raw_id), title))
    if not rows:
        raise InputError(f"{path}: no items (the file is empty)")
    return pd.DataFrame(rows, columns=["item_id", "title"])


# Tabs, line breaks and other control characters: they break the one-line-per-item info format.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class _Row:
    """Typed access to the fields of one CSV row; every error names the file and line."""

    def __init__(self, path, lineno, fields):
        self.path, self.lineno, self.fields = path, lineno, fields

    def fail(self, what: str):
        raise InputError(f"{self.path}:{self.lineno}: {what}")

    def text(self, column: str) -> str:
        return self.fields[column]

    def int(self, column: str, text: str | None = None) -> int:
        text = self.fields[column] if text is None else text
        if not _INT.fullmatch(text):
            self.fail(f"column {column!r} is not an integer: {text[:80]!r}")
        value = int(text)
        if not _INT64[0] <= value <= _INT64[1]:
            self.fail(f"column {column!r} is out of the 64-bit range: {text!r}")
        return value

    def float(self, column: str) -> float:
        text = self.fields[column]
        try:
            value = float(text)
        except ValueError:
            self.fail(f"column {column!r} is not a number: {text[:80]!r}")
        if not math.isfinite(value):
            self.fail(f"column {column!r} is not a finite number: {text[:80]!r}")
        return value

    def list(self, column: str, kind: str, length: int | None = None) -> list:
        """A Python-literal list of ints, numbers or strings (`kind`: int | number | str)."""
        text = self.fields[column]
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            self.fail(f"column {column!r} is not a Python literal: {text[:80]!r}")
        if not isinstance(value, list):
            self.fail(f"column {column!r} must be a list, got {type(value).__name__}: {text[:80]!r}")
        ok = {
            "int": lambda v: type(v) is int and _INT64[0] <= v <= _INT64[1],
            "number": lambda v: type(v) in (int, float) and math.isfinite(v),
            "str": lambda v: type(v) is str,
        }[kind]
        for v in value:
            if not ok(v):
                noun = {"int": "an integer", "number": "a finite number", "str": "a string"}[kind]
                self.fail(f"column {column!r} holds {v!r}, not {noun}: {text[:80]!r}")
        if length is not None and len(value) != length:
            self.fail(f"column {column!r} has {len(value)} entries but the history has {length}")
        return value


def _csv_rows(path: Path, text: str):
    """Yield (line, fields) per row; `line` is where the row starts.

    A field may be as long as the file (three 20,000-character titles in one history are data, not an
    error), so a broken quote shows as what it is: a row that does not end where its quotes say.
    """
    lines = text.split("\n")
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        end = 0
        while True:
            start = end + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                what = str(err)
                if start <= len(lines) and lines[start - 1].count('"') % 2:
                    what += (
                        ": a quote opened on this line is never closed, so the field runs on into the "
                        "following lines; close it or remove it"
                    )
                raise InputError(f"{path}:{start}: not a well-formed CSV row: {what}") from None
            end = reader.line_num
            if fields:  # blank lines are skipped, as csv.DictReader does
                yield start, fields
    finally:
        csv.field_size_limit(limit)


def read_split_csv(path: str | os.PathLike, n_items: int | None = None) -> tuple[pd.DataFrame, dict[int, str]]:
    """Read one reference split CSV. Returns the sample table and the item_id -> asin map it reveals.

    With `n_items`, every target and history id must lie in 0..n_items-1.
    """
    path = Path(path)
    rows = _csv_rows(path, _read_text(path))
    try:
        _, header = next(rows)
    except StopIteration:
        raise InputError(f"{path}: the file is empty; expected a header {CSV_COLUMNS}") from None
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path}:1: header lacks column(s) {missing}; expected {CSV_COLUMNS}")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"{path}:1: header repeats column(s) {dup}")
    has = set(header)
    samples, asins, asin_line = [], {}, {}

    def check_id(row, column, i):
        if n_items is not None and not 0 <= i < n_items:
            row.fail(f"{column} {i} is not an item id: the info file has {n_items} items (0..{n_items - 1})")

    for lineno, fields in rows:
        if len(fields) != len(header):
            raise InputError(
                f"{path}:{lineno}: {len(fields)} field(s) where the header has {len(header)}"
                + (" (the file looks truncated)" if len(fields) < len(header) else "")
            )
        row = _Row(path, lineno, dict(zip(header, fields)))
        hist = row.list("history_item_id", "int")
        if not hist:
            row.fail("empty history: every sample needs at least one history item")
        for i in hist:
            check_id(row, "history item id", i)
        target = row.int("item_id")
        check_id(row, "item_id", target)
        rec = {
            "user_id": row.text("user_id"),
            "history_item_ids": hist,
            "item_id": target,
            "history_ratings": None,
            "rating": None,
            "history_timestamps": None,
            "timestamp": None,
        }
        for hcol, col, key, kind in (
            ("history_rating", "rating", "rating", "number"),
            ("history_timestamp", "timestamp", "timestamp", "int"),
        ):
            h = row.fields.get(hcol, "")
            t = row.fields.get(col, "")
            if not h and not t:
                continue  # absent: null in the table (the published CDs train file has neither)
            if not h or not t:
                row.fail(f"{hcol!r} and {col!r} must both be given or both be empty, got {h[:40]!r} and {t[:40]!r}")
            if kind == "number":
                rec["history_ratings"] = [float(r) for r in row.list(hcol, "number", len(hist))]
                rec["rating"] = row.float(col)
            else:
                rec["history_timestamps"] = row.list(hcol, "int", len(hist))
                rec["timestamp"] = row.int(col)
        if "item_asin" in has:
            pairs = [(target, row.text("item_asin"))]
            if row.fields.get("item_asins"):
                pairs += zip(hist, row.list("item_asins", "str", len(hist)))
            for i, a in pairs:
                if asins.setdefault(i, a) != a:
                    row.fail(f"item {i} has asin {a!r} here but {asins[i]!r} at line {asin_line[i]}")
                asin_line.setdefault(i, lineno)
        samples.append(rec)
    df = pd.DataFrame(samples, columns=SAMPLE_COLUMNS)
    df["rating"] = df["rating"].astype("float64")
    df["timestamp"] = df["timestamp"].astype("Int64")
    return df, asins


def import_csv_dataset(folder: str | os.PathLike) -> ProcessedDataset:
    """Import a processed split in the reference format: {train,valid,test}.csv and info.txt.

    Each file may be gzipped instead (`train.csv.gz`, `info.txt.gz`). The reference repositories'
    layout (`{name}.csv` inside train/ valid/ test/ folders) can be read via import_csv_files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(
            f"{folder}: folder not found (a processed split is a folder with {INFO_FILE} and train/valid/test CSVs)"
        )
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file; give the folder that holds {INFO_FILE} and train/valid/test CSVs")
    return import_csv_files(
        info=split_file(folder, INFO_FILE), **{name: split_file(folder, f"{name}.csv") for name in SPLITS}
    )


def import_csv_files(info, train, valid, test) -> ProcessedDataset:
    for p in (info, train, valid, test):
        if not Path(p).exists():
            raise InputError(f"{p}: file not found (a processed split needs {INFO_FILE} and train/valid/test CSVs)")
    items = read_info(info)
    asin_of: dict[int, str] = {}
    asin_where: dict[int, Path] = {}
    tables = {}
    for name, path in (("train", train), ("valid", valid), ("test", test)):
        tables[name], asins = read_split_csv(path, n_items=len(items))
        for i, a in asins.items():
            if asin_of.setdefault(i, a) != a:
                raise InputError(f"{path}: item {i} has asin {a!r} here but {asin_of[i]!r} in {asin_where[i]}")
            asin_where.setdefault(i, Path(path))
    items["asin"] = items["item_id"].map(asin_of).fillna("")
    ds = ProcessedDataset(items=items[["item_id", "asin", "title"]], **tables)
    ds.validate(str(Path(info).parent))
    return ds


def _csv_row(row, titles, asins) -> list:
    hist = [int(i) for i in row.history_item_ids]
    target = int(row.item_id)
    ratings = row.history_ratings
    stamps = row.history_timestamps
    return [
        row.user_id,
        str([asins[i] for i in hist]),
        asins[target],
        str(hist),
        target,
        str([titles[i] for i in hist]),
        titles[target],
        "" if ratings is None else str([float(r) for r in ratings]),
        "" if pd.isna(row.rating) else float(row.rating),
        "" if stamps is None else str([int(t) for t in stamps]),
        "" if pd.isna(row.timestamp) else int(row.timestamp),
    ]


def export_csv_dataset(ds: ProcessedDataset, folder: str | os.PathLike) -> None:
    """Write the reference format: info.txt and {train,valid,test}.csv, byte-compatible with process.py."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    titles = ds.items["title"].tolist()
    asins = ds.items["asin"].tolist()
    with atomic_path(folder / "info.txt") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for item_id, title in enumerate(titles):
                fh.write(f"{title}\t{item_id}\n")
    for name in SPLITS:
        with atomic_path(folder / f"{name}.csv") as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_COLUMNS)
                for row in ds.split(name).itertuples(index=False):
                    writer.writerow(_csv_row(row, titles, asins))

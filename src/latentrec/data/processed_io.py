"""The processed-dataset contract: Parquet tables on disk, plus the BIGRec/D3/LatentR3 CSV format.

A processed dataset is a folder with
  items.parquet                 item_id (0..n-1), asin, title
  train|valid|test.parquet      one row per sample (see SAMPLE_COLUMNS)
Histories hold at most `history_len` item ids, oldest first. Timestamps and ratings may be null
(the published CDs train file has neither).

The CSV format (one `{split}.csv` per split and an `info.txt` of `title<TAB>item_id` lines) is the one
the reference repositories read and write; list columns are Python literals, parsed with
ast.literal_eval (never eval).
"""

from __future__ import annotations

import ast
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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


def read_info(path: str | os.PathLike) -> pd.DataFrame:
    """Parse an info file: one `title<TAB>item_id` line per item, ids 0..n-1."""
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            # Titles may contain tabs in principle; the id is always the last field.
            title, sep, raw_id = line.rpartition("\t")
            if not sep:
                raise InputError(f"{path}:{lineno}: expected 'title<TAB>item_id', got {line[:80]!r}")
            try:
                item_id = int(raw_id)
            except ValueError:
                raise InputError(f"{path}:{lineno}: item id {raw_id!r} is not an integer") from None
            rows.append((item_id, title))
    items = pd.DataFrame(rows, columns=["item_id", "title"]).sort_values("item_id", kind="stable")
    if not (items["item_id"].to_numpy() == range(len(items))).all():
        raise InputError(f"{path}: item ids must be exactly 0..{len(items) - 1}, each once")
    return items.reset_index(drop=True)


def _literal(path, lineno, column, text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise InputError(
            f"{path}:{lineno}: column {column!r} is not a Python literal: {text[:80]!r}"
        ) from None


def read_split_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[int, str]]:
    """Read one reference split CSV. Returns the sample table and the item_id -> asin map it reveals."""
    samples, asins = [], {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}:1: header lacks column(s) {missing}; expected {CSV_COLUMNS}")
        has = set(reader.fieldnames)
        for lineno, row in enumerate(reader, 2):
            hist = _literal(path, lineno, "history_item_id", row["history_item_id"])
            try:
                target = int(row["item_id"])
            except ValueError:
                raise InputError(f"{path}:{lineno}: item_id {row['item_id']!r} is not an integer") from None
            rec = {
                "user_id": row["user_id"],
                "history_item_ids": [int(i) for i in hist],
                "item_id": target,
                "history_ratings": None,
                "rating": None,
                "history_timestamps": None,
                "timestamp": None,
            }
            if "history_rating" in has and row["history_rating"]:
                rec["history_ratings"] = [float(r) for r in _literal(path, lineno, "history_rating", row["history_rating"])]
                rec["rating"] = float(row["rating"])
            if "history_timestamp" in has and row["history_timestamp"]:
                rec["history_timestamps"] = [int(t) for t in _literal(path, lineno, "history_timestamp", row["history_timestamp"])]
                rec["timestamp"] = int(row["timestamp"])
            if "item_asin" in has:
                asins[target] = row["item_asin"]
                if row.get("item_asins"):
                    for i, a in zip(hist, _literal(path, lineno, "item_asins", row["item_asins"])):
                        asins[int(i)] = a
            samples.append(rec)
    df = pd.DataFrame(samples, columns=SAMPLE_COLUMNS)
    df["rating"] = df["rating"].astype("float64")
    df["timestamp"] = df["timestamp"].astype("Int64")
    return df, asins


def import_csv_dataset(folder: str | os.PathLike) -> ProcessedDataset:
    """Import a processed split in the reference format: {train,valid,test}.csv and info.txt.

    Also accepts the reference repositories' layout names `{name}.csv` inside train/ valid/ test/
    folders by pointing at files directly via import_csv_files.
    """
    folder = Path(folder)
    return import_csv_files(
        info=folder / "info.txt", **{name: folder / f"{name}.csv" for name in SPLITS}
    )


def import_csv_files(info, train, valid, test) -> ProcessedDataset:
    for p in (info, train, valid, test):
        if not Path(p).exists():
            raise InputError(f"{p}: file not found (a processed split needs info.txt and train/valid/test CSVs)")
    items = read_info(info)
    asin_of: dict[int, str] = {}
    tables = {}
    for name, path in (("train", train), ("valid", valid), ("test", test)):
        tables[name], asins = read_split_csv(path)
        asin_of.update(asins)
    items["asin"] = items["item_id"].map(asin_of).fillna("")
    ds = ProcessedDataset(items=items[["item_id", "asin", "title"]], **tables)
    ds.validate(str(info).rsplit("/", 1)[0])
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

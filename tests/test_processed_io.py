import filecmp
import gzip

import pytest

from latentrec.data.processed_io import export_csv_dataset, import_csv_dataset, load_dataset, save_dataset
from latentrec.data.stats import dataset_stats


def test_cds_import_counts_and_byte_identical_round_trip(tmp_path, requires_cds):
    ds = import_csv_dataset(requires_cds)
    assert (len(ds.train), len(ds.valid), len(ds.test), ds.n_items) == (49251, 6156, 6157, 5841)
    save_dataset(ds, tmp_path / "pq")
    back = load_dataset(tmp_path / "pq")
    assert back.test["history_item_ids"].tolist() == ds.test["history_item_ids"].tolist()
    export_csv_dataset(back, tmp_path / "csv")
    for f in ("info.txt", "valid.csv", "test.csv"):  # the published train.csv lacks ratings/timestamps
        assert filecmp.cmp(tmp_path / "csv" / f, requires_cds / f, shallow=False), f
    st = dataset_stats(ds)
    assert st["n_distinct_titles"] == 5377  # REFERENCE.md §1.2
    assert st["test_time_range"] == ["2018-02-09", "2018-10-01"]


def test_history_ids_out_of_range_fail_validation():
    import pandas as pd

    from latentrec.data.processed_io import ProcessedDataset
    from latentrec.errors import InputError

    items = pd.DataFrame({"item_id": range(3), "asin": ["a", "b", "c"], "title": ["A", "B", "C"]})
    row = {
        "user_id": "u",
        "history_item_ids": [0, 1],
        "item_id": 2,
        "history_ratings": None,
        "rating": None,
        "history_timestamps": None,
        "timestamp": None,
    }
    good = pd.DataFrame([row, row])
    bad = pd.DataFrame([row, dict(row, history_item_ids=[1, -1])])
    ProcessedDataset(items=items, train=good, valid=good, test=good).validate()
    with pytest.raises(InputError, match="test: history item id out of range at row 1"):
        ProcessedDataset(items=items, train=good, valid=good, test=bad).validate()


@pytest.mark.slow
def test_edited_split_file_reruns_the_import(tmp_path):
    """A processed dataset's inputs are its files, not its folder: touching test.csv re-runs the import
    (an in-place edit used to go unseen, and results were built from the stale copy)."""
    import os
    import shutil
    import time

    import yaml

    from tests.test_bad_input import _set_field, _split
    from tests.test_workflow import ROOT, snakemake

    split = _split(tmp_path)
    for f in ("train.csv", "info.txt"):  # one gzipped file, as a published split may ship
        with open(split / f, "rb") as fin, gzip.open(split / f"{f}.gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        (split / f).unlink()
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["datasets"]["Tiny"] = {"source": "processed", "folder": str(split), "domain": "musics"}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/Tiny/data/test.parquet"
    args = ("--snakefile", str(ROOT / "Snakefile"), "--directory", str(work))
    past = time.time() - 1000
    for f in split.iterdir():
        os.utime(f, (past, past))
    snakemake(*args, "--cores", "1", target)
    out = snakemake(*args, "-n", target)
    assert "Nothing to be done" in out.stdout + out.stderr
    _set_field(split / "test.csv", 2, "rating", "1.0")  # an in-place edit: the folder's time stays
    out = snakemake(*args, "-n", target)
    assert "rule import_processed_dataset:" in out.stdout, f"test.csv edited, import not rescheduled:\n{out.stdout}"
    for f in ("info.txt.gz", "train.csv.gz", "valid.csv", "test.csv"):
        assert str(split / f) in out.stdout  # each file is an input of the job

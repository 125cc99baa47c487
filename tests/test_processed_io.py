import filecmp

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

"""Choosing a baseline's grid point on validation: the best metric of its valid ranked lists, first on ties."""

from types import SimpleNamespace

import pandas as pd

from latentrec.eval.selection import choose_grid_point


def _point(root, name, ranked):
    folder = root / name
    folder.mkdir()
    titles = ["a", "b", "c"]
    pd.DataFrame(
        {"row": range(len(ranked)), "pred_item_ids": ranked, "pred_titles": [[titles[i] for i in r] for r in ranked]}
    ).to_parquet(folder / "predictions_valid.parquet", index=False)
    return str(folder)


def test_best_metric_wins_and_ties_go_to_the_first_listed(tmp_path):
    ds = SimpleNamespace(valid=pd.DataFrame({"user_id": ["u", "v"], "item_id": [0, 1]}), titles=["a", "b", "c"])
    points = [
        _point(tmp_path, "lr_1", [[2, 0], [2, 1]]),  # hits at rank 2
        _point(tmp_path, "lr_2", [[0, 2], [1, 2]]),  # hits at rank 1
        _point(tmp_path, "lr_3", [[0, 2], [1, 2]]),
    ]  # the same as lr_2, listed later
    table, best = choose_grid_point(points, ds, "NDCG@10")
    assert best["point"] == "lr_2" and table["selected"].tolist() == [False, True, False]
    assert table["HR@10"].tolist() == [1.0, 1.0, 1.0]
    table, best = choose_grid_point(points, ds, "HR@10")
    assert best["point"] == "lr_1" and best["path"] == points[0]

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from latentrec.eval.metrics import (
    MISS,
    aggregate,
    evaluate_predictions,
    hit_positions_by_id,
    hit_positions_by_title,
    row_metrics,
)
from latentrec.eval.significance import mde, mean_std, paired_rows, paired_seeds


def test_positions_and_ndcg_by_hand():
    pos = hit_positions_by_id(np.array([[3, 1, 2], [5, 6, 7], [9, 8, 4]]), np.array([1, 0, 9]))
    assert pos.tolist() == [1, MISS, 0]
    m = row_metrics(pos, ks=(1, 3))
    assert m["HR@1"].tolist() == [0, 0, 1]
    assert m["HR@3"].tolist() == [1, 0, 1]
    assert m["NDCG@3"].tolist() == pytest.approx([1 / math.log2(3), 0, 1])
    assert m["NDCG@1"].tolist() == pytest.approx([0, 0, 1])


def test_title_match_takes_last_position_and_reference_strips():
    preds = [['"Greatest Hits"\n', "Other", " Greatest Hits "], ["A", "B"]]
    pos = hit_positions_by_title(preds, ["Greatest Hits", "C"])
    assert pos.tolist() == [2, MISS]


def test_evaluate_predictions_id_vs_title_with_duplicate_titles():
    titles = ["Greatest Hits", "Greatest Hits", "Solo"]
    test = pd.DataFrame({"user_id": ["u", "v"], "item_id": [1, 2]})
    preds = pd.DataFrame(
        {
            "row": [0, 1],
            "pred_item_ids": [[0, 2], [2, 0]],
            "pred_titles": [["Greatest Hits", "Solo"], ["Solo", "Greatest Hits"]],
        }
    )
    rows = evaluate_predictions(preds, test, titles)
    # Row 0 recommends item 0, which shares item 1's title: a hit by title, a miss by id.
    assert rows["HR@1"].tolist() == [0, 1]
    assert rows["title_HR@1"].tolist() == [1, 1]
    agg = aggregate(rows)
    assert agg["HR@10"] == 0.5 and agg["title_HR@10"] == 1.0 and agg["n_rows"] == 2


def test_evaluate_rejects_misaligned_rows():
    test = pd.DataFrame({"user_id": ["u"], "item_id": [0]})
    preds = pd.DataFrame({"row": [0, 1], "pred_item_ids": [[0], [0]], "pred_titles": [["a"], ["a"]]})
    with pytest.raises(ValueError):
        evaluate_predictions(preds, test, ["a"])


def test_paired_tests_agree_with_scipy():
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"row": np.arange(200), "NDCG@10": rng.random(200)})
    b = pd.DataFrame({"row": np.arange(200), "NDCG@10": rng.random(200) * 0.5})
    res = paired_rows(a, b, "NDCG@10")
    ref = stats.ttest_rel(a["NDCG@10"], b["NDCG@10"])
    assert res["p"] == pytest.approx(ref.pvalue) and res["t"] == pytest.approx(ref.statistic)
    assert res["p"] < 1e-6
    same = paired_rows(a, a, "NDCG@10")
    assert same["p"] == 1.0 and same["t"] == 0.0  # identical runs: no evidence of a difference
    shifted = a.assign(**{"NDCG@10": a["NDCG@10"] + 0.25})  # a constant non-zero difference: certain
    up = paired_rows(shifted, a, "NDCG@10")
    assert up["p"] == 0.0 and up["t"] == math.inf and up["mean_diff"] == pytest.approx(0.25)
    assert paired_rows(a, shifted, "NDCG@10")["t"] == -math.inf
    # The limit the convention stands for: a tiny jitter on the shift gives p -> 0 in scipy too.
    jitter = a.assign(**{"NDCG@10": a["NDCG@10"] + 0.25 + rng.normal(0, 1e-6, 200)})
    assert stats.ttest_rel(jitter["NDCG@10"], a["NDCG@10"]).pvalue < 1e-100
    assert math.isnan(paired_seeds({0: 0.1}, {0: 0.2}, "NDCG@10")["p"])  # one seed: no test
    s = paired_seeds({0: 0.1, 1: 0.12, 2: 0.11}, {0: 0.05, 1: 0.06, 2: 0.04, 3: 0.9}, "NDCG@10")
    assert s["seeds"] == [0, 1, 2] and s["n"] == 3 and s["p"] < 0.05
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_ranking_breaks_ties_by_ascending_item_id_everywhere():
    """Equal scores rank by ascending item id, in the top-k lists (evaluation) and in the full-ranking
    NDCG the sequential models select epochs with; checked against a hand-ranked example."""
    import torch

    from latentrec.baselines.base import topk_stable
    from latentrec.baselines.sequential import ndcg_at_k_full

    scores = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    top = topk_stable(scores, 4)
    assert top.indices.tolist() == [[1, 3, 0, 2], [0, 1, 2, 3]]  # 0.9s by id, then 0.5s by id
    wide = torch.zeros(1, 5000)  # many ties: torch.topk's own order among them is unspecified
    assert topk_stable(wide, 10).indices.tolist() == [list(range(10))]
    # Target item 2 in row 0: ranked after 1, 3 (higher) and 0 (tie, lower id): rank 3 -> 1/log2(5).
    # Target item 5 in row 1 (all tied): rank 5 -> 1/log2(7); with k = 5 it is outside the top 5.
    got = ndcg_at_k_full(scores, torch.tensor([2, 5]), k=10)
    assert got.tolist() == pytest.approx([1 / math.log2(5), 1 / math.log2(7)])
    assert ndcg_at_k_full(scores, torch.tensor([2, 5]), k=5).tolist() == pytest.approx([1 / math.log2(5), 0.0])


def _power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at a true mean difference `delta`: the t statistic follows a
    noncentral t with n - 1 degrees of freedom and noncentrality delta * sqrt(n) / sd."""
    df, nc = n - 1, delta * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(crit, df, nc) + np.nan_to_num(stats.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize("n", [3, 5, 24, 500])
def test_minimum_detectable_effect_has_80_percent_power(n):
    rng = np.random.default_rng(n)
    a = pd.DataFrame({"row": np.arange(n), "NDCG@10": rng.random(n)})
    b = pd.DataFrame({"row": np.arange(n), "NDCG@10": rng.random(n)})
    res = paired_rows(a, b, "NDCG@10")
    sd = float(np.std(a["NDCG@10"] - b["NDCG@10"], ddof=1))
    assert res["sd_diff"] == pytest.approx(sd)
    assert _power(res["mde"], sd, n) == pytest.approx(0.8, abs=1e-6)  # exactly 80 % power at the MDE ...
    assert _power(0.95 * res["mde"], sd, n) < 0.79  # ... and less below it
    # It scales with sd / sqrt(n) and lies near the normal-approximation (z_0.975 + z_0.8) sd / sqrt(n).
    assert mde(2 * sd, n) == pytest.approx(2 * res["mde"])
    z = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert res["mde"] > z and (n < 100 or res["mde"] == pytest.approx(z, rel=0.01))


def test_minimum_detectable_effect_edge_cases():
    a = pd.DataFrame({"row": np.arange(4), "NDCG@10": [0.1, 0.2, 0.3, 0.4]})
    assert paired_rows(a.assign(**{"NDCG@10": a["NDCG@10"] + 0.1}), a, "NDCG@10")["mde"] == 0.0  # certain
    assert math.isnan(paired_seeds({0: 0.1}, {0: 0.2}, "NDCG@10")["mde"])  # one pair: no test, no MDE
    assert math.isnan(mde(0.1, 1))

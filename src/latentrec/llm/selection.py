"""Choosing a grid point from the logs its training wrote: an SFT point by its lowest validation loss, an RL point
by its best validation -perplexity of the target."""

from __future__ import annotations

import math
from pathlib import Path

from latentrec.errors import InputError
from latentrec.io_utils import read_json


def grid_point_logs(points: list[str], name: str, stage: str) -> dict[str, dict]:
    """{grid point folder: its log `name`}, in the listed order; a missing log is a clear error."""
    logs = {}
    for point in points:
        f = Path(point) / name
        if not f.exists():
            raise InputError(f"{f}: missing; the {stage} grid point did not finish")
        logs[point] = read_json(f)
    return logs


def lowest_valid_loss(logs: dict[str, dict]) -> str:
    """The key of `logs` (SFT train logs, in the grid's listed order) with the lowest `best_valid_loss`;
    a tie goes to the first listed. A point that never reached a finite validation loss is never chosen."""
    best, best_loss = None, math.inf
    for point, entry in logs.items():
        loss = entry.get("best_valid_loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss) and loss < best_loss:
            best, best_loss = point, loss
    if best is None:
        raise InputError(
            f"no SFT grid point reached a finite validation loss ({', '.join(map(str, logs))}); "
            "see their train_log.json"
        )
    return best


def best_valid_neg_ppl(logs: dict[str, dict]) -> str:
    """The key of `logs` (RL logs, in the grid's listed order) with the highest `valid_neg_ppl`; a tie goes to the
    first listed."""
    return max(logs, key=lambda p: logs[p]["valid_neg_ppl"])

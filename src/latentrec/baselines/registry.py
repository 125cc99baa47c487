"""The one registry of score-based recommender families: config `family` name -> class.

It imports every implementation; the implementations import only base.py, so there is no cycle and no
import order in which a family is missing. A new family: write its class (with `family = "..."`), list
it in `_CLASSES` and add its name to baselines/families.py (read by the config checks without torch).
"""

from __future__ import annotations

from latentrec.baselines.alpharec import AlphaRec
from latentrec.baselines.base import Recommender
from latentrec.baselines.families import RECOMMENDER_FAMILIES
from latentrec.baselines.mostpop import MostPop
from latentrec.baselines.sequential import Caser, GRU4Rec, SASRec
from latentrec.checks import check_value

_CLASSES = (MostPop, Caser, GRU4Rec, SASRec, AlphaRec)
FAMILIES: dict[str, type[Recommender]] = {cls.family: cls for cls in _CLASSES}
if len(FAMILIES) != len(_CLASSES) or "" in FAMILIES:  # a class that forgot or copied its `family` name
    raise RuntimeError(f"baselines/registry.py: family names {[c.family for c in _CLASSES]} must be set and distinct")
if sorted(FAMILIES) != sorted(RECOMMENDER_FAMILIES):
    raise RuntimeError(
        f"baselines/registry.py: the classes' families {sorted(FAMILIES)} differ from "
        f"baselines/families.py's {sorted(RECOMMENDER_FAMILIES)}"
    )


def families() -> list[str]:
    return sorted(FAMILIES)


def build(family: str, params: dict | None = None, seed: int = 0) -> Recommender:
    if family not in FAMILIES:
        raise KeyError(f"unknown recommender family {family!r}; known: {families()}")
    model = FAMILIES[family](params=dict(params or {}), seed=seed)
    check_params(family, params)  # after the constructor's own checks (its messages name the family)
    return model


# Bounds of the hyperparameters the families share (sizes >= 1, rates > 0); types follow the defaults.
AT_LEAST = {
    **dict.fromkeys(
        (
            "hidden",
            "mlp_hidden",
            "n_layers",
            "n_heads",
            "max_epochs",
            "batch_size",
            "eval_batch_size",
            "max_len",
            "n_h",
            "n_v",
        ),
        1,
    ),
    "patience": 1,  # epochs without improvement before stopping (0 would stop after the first epoch)
    **dict.fromkeys(("n_negatives", "weight_decay", "dropout"), 0),
}
ABOVE = {"lr": 0, "tau": 0}
BELOW = {"dropout": 1}


def check_params(family: str, params: dict | None) -> None:
    """A family's hyperparameters, checked before anything is built: known keys (the family's defaults), the
    defaults' types, positive sizes and rates. Raises ValueError("<key>: must be ..., got ...")."""
    if family not in FAMILIES:
        raise ValueError(f"unknown recommender family {family!r}; known: {families()}")
    cls = FAMILIES[family]
    defaults = cls.hyperparameters()
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} of family {family!r}; known: {sorted(defaults) or 'none'}"
        )
    for key, value in params.items():
        default = defaults[key]
        kind = None if default is None else type(default).__name__  # int, float, bool, str
        check_value(
            key,
            value,
            kind,
            at_least=AT_LEAST.get(key),
            above=ABOVE.get(key),
            below=BELOW.get(key),
            choices=cls.param_choices.get(key),
        )
    cls.check_combination({**defaults, **params})

"""Config access: a dataset's processing, a method's grid points, a latent recipe as a dataset sees it.

The checks that run before any job live in `latentrec.config_checks`; the size bounds in `latentrec.bounds`.
"""

from __future__ import annotations

import copy
import itertools

from latentrec.baselines.families import RECOMMENDER_FAMILIES as _RECOMMENDER_FAMILY_NAMES
from latentrec.errors import InputError
from latentrec.extensions import is_class_spec

# Families that rank items by score (rule fit_predict_recommender); LLM families get their own rules.
RECOMMENDER_FAMILIES = frozenset(_RECOMMENDER_FAMILY_NAMES)


def is_recommender_family(family) -> bool:
    """A built-in score-based family, or a researcher's own class named `module:Class` (checked at DAG build)."""
    return family in RECOMMENDER_FAMILIES or is_class_spec(family)


# Names of datasets, methods, recipes and models become file paths and shell arguments.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
NAME_RULE = f"names must match {NAME_PATTERN} (a letter or digit, then letters, digits, _ . + -)"
# Grid point names (`lr0.001_weight_decay1e-06`) are folder names too.
POINT_PATTERN = r"^[A-Za-z0-9_.+-]+$"
# Amazon 2018 file stems (rule download_amazon2018's wildcard); more than the largest category's items.
CATEGORY_PATTERN = r"^[A-Za-z_]+$"
MAX_CATEGORY_ITEMS = 3_000_000  # Books, the largest Amazon 2018 category, has ~2.9M items in its meta file


def dataset_config(config: dict, name: str) -> dict:
    return config["datasets"][name]


def processing_config(config: dict, name: str) -> dict:
    """The global processing block with the dataset's overrides applied."""
    merged = copy.deepcopy(config["processing"])
    merged.update(config["datasets"][name].get("processing", {}))
    return merged


def method_config(config: dict, name: str) -> dict:
    return config["methods"][name]


def recommender_methods(config: dict, grid: bool | None = None) -> list[str]:
    """Score-based methods; grid=True/False keeps only those with/without a hyperparameter grid."""
    out = [m for m, c in config["methods"].items() if is_recommender_family(c["family"])]
    if grid is not None:
        out = [m for m in out if bool(config["methods"][m].get("grid")) == grid]
    return out


LLM_FAMILIES = {"llm", "latent"}  # decoded by the constrained beam search; "latent" = LatentR3 / FLR recipes


def llm_methods(config: dict) -> list[str]:
    return [m for m, c in config["methods"].items() if c["family"] in LLM_FAMILIES]


def grid_points(method: dict) -> dict[str, dict]:
    """The method's grid as {point name: full params}, in a fixed order (product of the listed values).

    Names read like `lr0.001_weight_decay1e-06`, so result folders say what they hold.
    """
    base = dict(method.get("params", {}))
    grid = method.get("grid") or {}
    if not grid:
        return {"default": base}
    points = {}
    for values in itertools.product(*grid.values()):
        params = dict(base, **dict(zip(grid, values)))
        name = "_".join(f"{k}{v}" for k, v in zip(grid, values))
        points[name] = params
    return points


PER_DATASET_KEYS = {"head", "head_options", "n_latents", "refine_steps", "sft"}


def latent_recipe(config: dict, name: str, dataset: str | None = None) -> dict:
    """A latent recipe with the warm-up SFT config resolved (llm.sft overlaid by the recipe's sft), and,
    given a dataset, its `per_dataset` overrides applied (dicts merge one level: head_options, sft)."""
    recipes = config["llm"].get("latent", {})
    if name not in recipes:
        raise InputError(f"config: llm.latent: no recipe {name!r} (known: {sorted(recipes)}) (see config/README.md)")
    r = copy.deepcopy(recipes[name])
    per_dataset = r.pop("per_dataset", None) or {}
    for ds, over in per_dataset.items():
        bad = set(over) - PER_DATASET_KEYS
        if bad:
            raise InputError(
                f"config: llm.latent.{name}.per_dataset.{ds}: {sorted(bad)} cannot differ per dataset "
                f"(allowed: {sorted(PER_DATASET_KEYS)}) (see config/README.md)"
            )
    for key, value in (per_dataset.get(dataset) or {}).items():
        both_dicts = isinstance(value, dict) and isinstance(r.get(key), dict)
        r[key] = {**r[key], **value} if both_dicts else copy.deepcopy(value)
    r["sft"] = {**config["llm"]["sft"], **(r.get("sft") or {})}
    r.setdefault("head", "latentratt")
    r.setdefault("n_latents", 1)
    r.setdefault("refine_steps", 1)
    r.setdefault("rl", None)
    return r


def latent_architecture(config: dict, name: str, dataset: str | None = None) -> dict:
    """The head, head_options, n_latents and refine_steps of the model a recipe trains and decodes with:
    those of the recipe whose warm-up it reuses (`warmup_from`), since its RL starts from that model."""
    own = latent_recipe(config, name, dataset)
    r = latent_recipe(config, own["warmup_from"], dataset) if own.get("warmup_from") else own
    return {key: r.get(key) for key in ("head", "head_options", "n_latents", "refine_steps")}


def latent_rl_points(config: dict, name: str) -> dict[str, dict]:
    """RL grid points of a recipe ({} when it has no RL stage)."""
    r = latent_recipe(config, name)
    if r["rl"] is None:
        return {}
    return grid_points({"params": r["rl"], "grid": r.get("rl_grid")})


def sft_grid(config: dict, recipe: str | None = None) -> dict:
    """The SFT values to search, `{field: [values]}` ({}: none): llm.sft_grid for the backbone SFT (BIGRec,
    D3); for a latent recipe's warm-up its own `sft_grid` where it writes one (null or {}: no grid), else
    llm.sft_grid."""
    llm = config["llm"]
    own = ((llm.get("latent") or {}).get(recipe) or {}) if recipe is not None else {}
    if "sft_grid" in own:
        return dict(own["sft_grid"] or {})
    return dict(llm.get("sft_grid") or {})


def sft_grid_points(config: dict, recipe: str | None = None, dataset: str | None = None) -> dict[str, dict]:
    """SFT grid points as {point name: full SFT config}, in the grid's listed order ({} without a grid):
    of the backbone SFT (recipe None, llm.sft), or of a latent recipe's warm-up (its resolved sft; given a
    dataset, with its `per_dataset` overrides). Point names (`lr0.0003`) never depend on the dataset."""
    grid = sft_grid(config, recipe)
    if not grid:
        return {}
    base = config["llm"]["sft"] if recipe is None else latent_recipe(config, recipe, dataset)["sft"]
    return grid_points({"params": base, "grid": grid})


def latent_recipes_used(config: dict) -> list[str]:
    return sorted({c["recipe"] for c in config["methods"].values() if c["family"] == "latent"})

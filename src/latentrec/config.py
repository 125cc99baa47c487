"""Config access and the semantic checks a JSON schema cannot express.

The schema (workflow/schemas/config.schema.yaml) checks types; `validate_config` checks meaning:
methods that exist, ratios that sum to 1, known time zones, a source block for every dataset.
"""

from __future__ import annotations

import copy
import itertools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from latentrec.errors import InputError

# Families that rank items by score (rule fit_predict_recommender); LLM families get their own rules.
RECOMMENDER_FAMILIES = {"mostpop", "caser", "gru4rec", "sasrec", "alpharec"}


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
    out = [m for m, c in config["methods"].items() if c["family"] in RECOMMENDER_FAMILIES]
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


def validate_config(config: dict) -> None:
    def fail(where, msg):
        raise InputError(f"config: {where}: {msg} (see config/README.md)")

    for m in config["run_methods"]:
        if m not in config["methods"]:
            fail("run_methods", f"method {m!r} is not defined under `methods` ({sorted(config['methods'])})")
    for name in config["run_datasets"]:
        if name not in config["datasets"]:
            fail("run_datasets", f"dataset {name!r} is not defined under `datasets` ({sorted(config['datasets'])})")
    for name in config["datasets"]:
        d = config["datasets"][name]
        if d["source"] == "synthetic" and "synthetic" not in d:
            fail(f"datasets.{name}", "source 'synthetic' needs a `synthetic` block")
        if d["source"] == "processed" and "folder" not in d:
            fail(f"datasets.{name}", "source 'processed' needs `folder` (with info.txt and train/valid/test.csv)")
        p = processing_config(config, name)
        ratios = p.get("split_ratios", [0.8, 0.1, 0.1])
        if abs(sum(ratios) - 1) > 1e-9:
            fail(f"datasets.{name}.processing.split_ratios", f"must sum to 1, got {ratios}")
        try:
            ZoneInfo(p.get("timezone", "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            fail(f"datasets.{name}.processing.timezone", f"unknown time zone {p.get('timezone')!r}")
    for m, c in config["methods"].items():
        extra = set(c.get("seeds") or []) - {int(s) for s in config["seeds"]}
        if extra:
            fail(f"methods.{m}.seeds", f"{sorted(extra)} not in the run's `seeds` {config['seeds']}")
        if c["family"] == "latent":
            if "recipe" not in c:
                fail(f"methods.{m}", "a latent method needs `recipe:` (a key of llm.latent)")
            latent_recipe(config, c["recipe"])
    for name, recipe in config["llm"].get("latent", {}).items():
        if "init_seed" in (recipe or {}) and (recipe or {}).get("init", "base") != "sft":
            fail(f"llm.latent.{name}.init_seed", "only means something with `init: sft` (which SFT seed to start from)")
        for ds in (recipe or {}).get("per_dataset") or {}:
            if ds not in config["datasets"]:
                fail(f"llm.latent.{name}.per_dataset", f"{ds!r} is not a dataset")
    for b in config["report"].get("baselines", []):
        if b not in config["methods"]:
            fail("report.baselines", f"{b!r} is not a method")


# Recipe keys a dataset may override (`per_dataset`): what the warm-up trains, never what shapes the DAG.
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
            raise InputError(f"config: llm.latent.{name}.per_dataset.{ds}: {sorted(bad)} cannot differ per dataset "
                             f"(allowed: {sorted(PER_DATASET_KEYS)}) (see config/README.md)")
    for key, value in (per_dataset.get(dataset) or {}).items():
        both_dicts = isinstance(value, dict) and isinstance(r.get(key), dict)
        r[key] = {**r[key], **value} if both_dicts else copy.deepcopy(value)
    r["sft"] = {**config["llm"]["sft"], **(r.get("sft") or {})}
    r.setdefault("head", "latentratt")
    r.setdefault("n_latents", 1)
    r.setdefault("refine_steps", 1)
    r.setdefault("rl", None)
    return r


def latent_rl_points(config: dict, name: str) -> dict[str, dict]:
    """RL grid points of a recipe ({} when it has no RL stage)."""
    r = latent_recipe(config, name)
    if r["rl"] is None:
        return {}
    return grid_points({"params": r["rl"], "grid": r.get("rl_grid")})


def latent_recipes_used(config: dict) -> list[str]:
    return sorted({c["recipe"] for c in config["methods"].values() if c["family"] == "latent"})


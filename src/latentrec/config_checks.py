"""The checks that run on the config before any job starts.

Three layers, all called from the Snakefile / common.smk at DAG build:
`check_config_files` (YAML mappings with a key written twice), `validate_schema` (types, ranges,
unknown keys and safe names, workflow/schemas/config.schema.yaml) and `validate_config` (meaning:
methods that exist, ratios that sum to 1, known time zones, every family's hyperparameters, the SFT
and RL configs built as the jobs will build them; then the size bounds of `latentrec.bounds`). Every
message names the key path.
"""

from __future__ import annotations

import itertools
import os
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from latentrec.bounds import check_bounds, check_job_count
from latentrec.checks import check_value, is_kind
from latentrec.config import (
    CATEGORY_PATTERN,
    LLM_FAMILIES,
    MAX_CATEGORY_ITEMS,
    NAME_PATTERN,
    NAME_RULE,
    POINT_PATTERN,
    RECOMMENDER_FAMILIES,
    grid_points,
    is_recommender_family,
    latent_recipe,
    latent_rl_points,
    processing_config,
    sft_grid,
)
from latentrec.data.split_files import SPLIT_FILES
from latentrec.errors import InputError
from latentrec.extensions import SPEC_FORM, is_class_spec
from latentrec.flops import rl_shared_samples


def _fail(where: str, msg: str):
    raise InputError(f"config: {where}: {msg} (see config/README.md)")


def key_path(parts) -> str:
    """`methods.SASRec.params.hidden`, `seeds[0]`: a key path as the messages write it."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ------------------------------------------------------------------ duplicate keys in the YAML files
def check_config_files(paths) -> None:
    """Refuse a config file whose mapping names one key twice (YAML keeps the last one silently).

    `paths`: the files Snakemake loaded (`workflow.configfiles`: the default and every --configfile).
    Merge keys (`<<: *anchor`) followed by an override are not duplicates.
    """
    import yaml

    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                root = yaml.compose(fh, Loader=yaml.SafeLoader)
        except OSError:
            continue  # Snakemake itself reports a missing file
        for where, key, first, line in _duplicate_keys(root, [], set()):
            raise InputError(
                f"{path}:{line}: config: {key_path([*where, key])}: the key {key!r} is written twice "
                f"(first at line {first}); YAML would silently keep only the last one "
                "(see config/README.md)"
            )


def _duplicate_keys(node, where, seen):
    import yaml

    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first = {}
        for k, v in node.value:
            if k.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: the anchored mapping is checked where it is written
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            if key in first:
                yield where, key, first[key], k.start_mark.line + 1
            first.setdefault(key, k.start_mark.line + 1)
            yield from _duplicate_keys(v, [*where, key], seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield from _duplicate_keys(v, [*where, i], seen)


# ------------------------------------------------------------------ the JSON schema, with readable messages
def validate_schema(config: dict, schema_path) -> None:
    """Check `config` against the JSON schema; one line per problem, each naming the key path."""
    import jsonschema
    import yaml

    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (key_path(e.absolute_path), e.message))
    lines = list(dict.fromkeys(_schema_message(e) for e in errors))
    if len(lines) == 1:
        raise InputError(f"{lines[0]} (see config/README.md)")
    if lines:
        more = f"\n  ... and {len(lines) - 12} more" if len(lines) > 12 else ""
        raise InputError(f"config: {len(lines)} problems (see config/README.md):\n  " + "\n  ".join(lines[:12]) + more)


def _schema_message(e) -> str:
    where = key_path(e.absolute_path) or "(top level)"
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = sorted(e.schema.get("properties", {}))
        extra = sorted(set(e.instance) - set(allowed))
        return f"config: {where}: unknown key(s) {extra}; allowed: {allowed}"
    if e.validator == "pattern":
        if e.validator_value == NAME_PATTERN:
            return (
                f"config: {where}: name {e.instance!r} is not allowed: {NAME_RULE}; "
                "it becomes a file path and a shell argument"
            )
        if e.validator_value == CATEGORY_PATTERN:
            return (
                f"config: {where}: {e.instance!r} is not an Amazon 2018 file stem (letters and _, e.g. CDs_and_Vinyl)"
            )
    if e.validator == "uniqueItems":
        seen, dups = [], []
        for x in e.instance:
            if x in seen and x not in dups:
                dups.append(x)
            seen.append(x)
        return f"config: {where}: {dups} listed more than once"
    return f"config: {where}: {e.message}"


def check_names(config: dict) -> None:
    """Dataset, method, recipe and model names are safe file-path components and shell words."""
    name = re.compile(NAME_PATTERN)

    def check(where, names):
        for n in names:
            if not isinstance(n, str) or not name.match(n):
                _fail(where, f"name {n!r} is not allowed: {NAME_RULE}; it becomes a file path and a shell argument")

    check("datasets", config.get("datasets") or {})
    check("methods", config.get("methods") or {})
    check("run_datasets", config.get("run_datasets") or [])
    check("run_methods", config.get("run_methods") or [])
    llm = config.get("llm") or {}
    check("llm.latent", llm.get("latent") or {})
    check("llm.models", llm.get("models") or {})


def _field_path(where: str, err: Exception, fields=()) -> tuple[str, str]:
    """("<where>.<field>", rest) for a message "<field>: ..."; (where, message) otherwise."""
    msg = str(err)
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*): (.*)$", msg, re.S)
    if m and (not fields or m.group(1) in fields):
        return f"{where}.{m.group(1)}", m.group(2)
    return where, msg


def _check_point_name(grid_where: str, point: str) -> None:
    if not re.match(POINT_PATTERN, point):
        _fail(
            grid_where,
            f"the grid point {point!r} would not be a safe folder name: "
            "grid values must be numbers, booleans or simple words",
        )


def _check_grid_points(
    points: dict[str, dict],
    grid: dict,
    grid_where: str,
    base_where: str,
    build,
    *,
    fields=(),
    errors=(ValueError, TypeError),
    always_name_point: bool = False,
) -> None:
    """Each grid point ({name: full params}) has a safe folder name and is accepted by `build`, which raises
    "<field>: ..." as the jobs would. A field the grid sets is reported under the grid's key path
    (`grid_where`.<field>) with the point named; any other field under `base_where` (the point named too
    when `always_name_point`)."""
    for point, params in points.items():
        _check_point_name(grid_where, point)
        try:
            build(params)
        except errors as err:
            path, msg = _field_path(base_where, err, fields)
            field = path.rsplit(".", 1)[-1]
            if field in grid:
                path = f"{grid_where}.{field}"
            if field in grid or always_name_point:
                msg = f"{msg} (grid point {point})"
            _fail(path, msg)


# ------------------------------------------------------------------ the semantic checks
METHOD_COMMON_KEYS = {"family", "paper_name", "display_name", "datasets", "seeds"}
FAMILY_KEYS = {"recommender": {"params", "grid"}, "llm": {"tuned", "decode"}, "latent": {"recipe", "stage", "decode"}}


def validate_config(config: dict) -> None:
    """Everything the schema cannot say, checked at DAG build; raises InputError naming the key path."""
    fail = _fail
    check_names(config)
    check_job_count(config)  # first: a config of 1e5 jobs is refused before anything enumerates its grids
    for key in ("seeds", "run_datasets", "run_methods"):
        values = list(config[key])
        dups = sorted({str(v) for v in values if values.count(v) > 1})
        if dups:
            fail(key, f"{dups} listed more than once")
    for s in config["seeds"]:
        if not is_kind(s, "int") or s < 0:
            fail("seeds", f"seeds must be integers >= 0, got {s!r}")
    for m in config["run_methods"]:
        if m not in config["methods"]:
            fail("run_methods", f"method {m!r} is not defined under `methods` ({sorted(config['methods'])})")
    for name in config["run_datasets"]:
        if name not in config["datasets"]:
            fail("run_datasets", f"dataset {name!r} is not defined under `datasets` ({sorted(config['datasets'])})")
    for name in config["datasets"]:
        _check_dataset(config, name)
    _check_llm(config)
    for m, c in config["methods"].items():
        _check_method(config, m, c)
    _check_decode(config)
    for b in config["report"].get("baselines", []):
        if b not in config["methods"]:
            fail("report.baselines", f"{b!r} is not a method")
    check_bounds(config)


def _processing_where(config: dict, name: str, key: str) -> str:
    own = config["datasets"][name].get("processing") or {}
    return f"datasets.{name}.processing.{key}" if key in own else f"processing.{key}"


FILL_SPLIT_FOLDER = (
    "fill it in one of two ways: copy the processed split the LatentR3 authors publish with their code "
    "(info.txt, train.csv, valid.csv, test.csv), or build the split from the raw Amazon 2018 dumps with "
    "`source: raw`"
)


def _check_split_folder(where: str, folder: str) -> None:
    """A processed split must be there before the DAG is built: a missing producer input would make
    Snakemake drop the import and report "Nothing to be done" over another dataset's tables."""
    if os.path.isfile(folder):
        _fail(where, f"{folder!r} is a file; it must be a folder with {', '.join(SPLIT_FILES)}")
    if not os.path.isdir(folder):  # missing, or a symlink loop / dangling link
        _fail(where, f"the folder {folder!r} does not exist (or is a broken link): {FILL_SPLIT_FOLDER}")
    missing = [f for f in SPLIT_FILES if not any(os.path.isfile(os.path.join(folder, f + ext)) for ext in ("", ".gz"))]
    if missing:
        _fail(where, f"the folder {folder!r} lacks {', '.join(missing)} (each may be gzipped): {FILL_SPLIT_FOLDER}")


def _check_dataset(config: dict, name: str) -> None:
    fail = _fail
    d = config["datasets"][name]
    if d["source"] == "synthetic" and "synthetic" not in d:
        fail(f"datasets.{name}", "source 'synthetic' needs a `synthetic` block")
    if d["source"] == "processed" and "folder" not in d:
        fail(f"datasets.{name}", "source 'processed' needs `folder` (with info.txt and train/valid/test.csv)")
    if d["source"] == "processed":
        if name in config["run_datasets"]:  # a dataset defined but not run needs no files
            _check_split_folder(f"datasets.{name}.folder", d["folder"])
    if d["source"] == "raw" and not re.match(CATEGORY_PATTERN, d.get("category", name)):
        fail(
            f"datasets.{name}",
            f"a raw dataset downloads its `category` (default: its name), and {name!r} is not "
            "an Amazon 2018 file stem (letters and _): set `category`, e.g. CDs_and_Vinyl",
        )
    p = processing_config(config, name)
    ratios = p.get("split_ratios", [0.8, 0.1, 0.1])
    if abs(sum(ratios) - 1) > 1e-9:
        fail(_processing_where(config, name, "split_ratios"), f"must sum to 1, got {ratios}")
    try:
        ZoneInfo(p.get("timezone", "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        fail(_processing_where(config, name, "timezone"), f"unknown time zone {p.get('timezone')!r}")
    if d["source"] == "processed":
        return
    months = {}
    for key, default in (("window_start", "2017-10"), ("window_end", "2018-11")):
        y, m = (int(x) for x in str(p.get(key, default)).split("-"))
        if not 1 <= m <= 12:
            fail(_processing_where(config, name, key), f"month {m} of {p[key]!r} is not 1..12")
        months[key] = (y, m)
    if months["window_start"] > months["window_end"]:
        fail(
            _processing_where(config, name, "window_start"),
            f"{p.get('window_start')!r} is after window_end {p.get('window_end')!r}",
        )
    start_year = months["window_start"][0]
    min_start_year = p.get("min_start_year", 1996)
    if min_start_year > start_year:
        fail(
            _processing_where(config, name, "min_start_year"),
            f"{min_start_year} is after window_start {p.get('window_start')!r}: the back-off moves the start "
            "back towards min_start_year, so it must be at most the window's start year",
        )
    min_items = p.get("min_items", 5000)
    if d["source"] == "synthetic" and min_items > d["synthetic"]["n_items"]:
        fail(
            _processing_where(config, name, "min_items"),
            f"{min_items} items can never survive the k-core: the synthetic catalog has n_items "
            f"{d['synthetic']['n_items']} (datasets.{name}.synthetic.n_items)",
        )
    if d["source"] == "raw" and min_items > MAX_CATEGORY_ITEMS:
        fail(
            _processing_where(config, name, "min_items"),
            f"{min_items} is more items than any Amazon 2018 category has (the largest, Books, ~2.9M): "
            "the back-off could never reach it",
        )


def _check_llm(config: dict) -> None:
    # The LLM modules load torch and transformers: imported here, when the LLM checks run, so reading
    # config helpers (the Snakefile, common.smk) stays light. (No cycle: they import checks.py, not this.)
    from latentrec.llm.grpo import LRGRPOConfig
    from latentrec.llm.sft import SFTConfig
    from latentrec.llm.tracking import check_tracker

    fail = _fail
    llm = config["llm"]
    if llm["backbone"] not in llm["models"]:
        fail("llm.backbone", f"{llm['backbone']!r} is not a key of llm.models (known: {sorted(llm['models'])})")
    try:  # accelerate skips a tracker whose package is missing without a word: refuse before any job
        check_tracker(llm.get("tracking", "tensorboard"))
    except InputError as e:
        fail("llm.tracking", str(e).removeprefix("llm.tracking: "))
    limit = (config.get("evaluation") or {}).get("test_limit")
    if limit is not None and llm["decode_shards"] > limit:
        fail(
            "llm.decode_shards",
            f"{llm['decode_shards']} decode shards of {limit} test rows "
            f"(evaluation.test_limit) leave shards without a row; use at most {limit}",
        )
    sft_fields = SFTConfig.__dataclass_fields__
    try:
        SFTConfig.from_dict(llm["sft"])
    except (ValueError, TypeError) as err:
        fail(*_field_path("llm.sft", err, sft_fields))
    _check_sft_grid("llm.sft_grid", llm.get("sft_grid"), [("llm.sft", llm["sft"])])
    recipes = llm.get("latent") or {}
    for name, raw in recipes.items():
        raw = raw or {}
        where = f"llm.latent.{name}"
        if "init_seed" in raw and raw.get("init", "base") != "sft":
            fail(f"{where}.init_seed", "only means something with `init: sft` (which SFT seed to start from)")
        if raw.get("warmup_from") is not None and raw["warmup_from"] not in recipes:
            fail(f"{where}.warmup_from", f"no recipe {raw['warmup_from']!r} (known: {sorted(recipes)})")
        for ds in raw.get("per_dataset") or {}:
            if ds not in config["datasets"]:
                fail(f"{where}.per_dataset", f"{ds!r} is not a dataset ({sorted(config['datasets'])})")
        for ds in [None, *(raw.get("per_dataset") or {})]:
            here = where if ds is None else f"{where}.per_dataset.{ds}"
            r = latent_recipe(config, name, ds)
            _check_head(here, r)
            try:
                SFTConfig.from_dict(r["sft"])
            except (ValueError, TypeError) as err:
                fail(*_field_path(f"{here}.sft", err, sft_fields))
            if r["sft"].get("packing"):
                fail(
                    f"{here}.sft.packing",
                    "the latent warm-up trains on padded rows only (its head reads each "
                    "prompt as its own row); set `packing: false` in this recipe's sft "
                    "(llm.sft's value is inherited)",
                )
        _check_recipe_sft_grid(config, name, raw)
        rl_grid = raw.get("rl_grid") or {}
        if rl_grid and raw.get("rl") is None:
            fail(f"{where}.rl_grid", "a grid over RL values needs an `rl` block (rl: null means no RL stage)")
        _check_grid_points(
            latent_rl_points(config, name),
            rl_grid,
            f"{where}.rl_grid",
            f"{where}.rl",
            LRGRPOConfig.from_dict,
            fields=LRGRPOConfig.__dataclass_fields__,
        )
        _check_forward_samples(config, where, raw.get("rl"))


def _check_forward_samples(config: dict, where: str, rl: dict | None) -> None:
    """`forward_samples` divides the samples that share a baseline on one GPU (the step splits into equal
    forwards), known before any job from llm.rl_gpus."""
    if not rl or not rl.get("forward_samples"):
        return
    gpus = max(1, int(config["llm"].get("rl_gpus") or 1))
    shared = rl_shared_samples(rl, config["llm"])
    if shared % int(rl["forward_samples"]):
        _fail(
            f"{where}.rl.forward_samples",
            f"must divide the samples sharing a baseline on each of the llm.rl_gpus = {gpus} GPUs "
            f"((advantage_groups or groups_per_step) / GPUs = {shared}), got {rl['forward_samples']}",
        )


def _check_sft_grid(where: str, grid, bases) -> None:
    """A grid over SFT values, `{field: [values]}`: known SFTConfig fields (not `seed`: the run's seeds),
    non-empty lists without repeats, safe point names, and every point laid over each base SFT config
    it applies to (`bases`: (key path, SFT config) pairs) built with SFTConfig.from_dict as the jobs build it."""
    from latentrec.llm.sft import SFTConfig

    if grid is None or grid == {}:
        return
    if not isinstance(grid, dict):
        _fail(where, f"must be a mapping {{field: [values]}}, e.g. {{lr: [3.0e-3, 3.0e-4, 3.0e-5]}}, got {grid!r}")
    fields = SFTConfig.__dataclass_fields__
    unknown = sorted(set(grid) - set(fields))
    if unknown:
        _fail(where, f"unknown SFT option(s) {unknown}; known: {sorted(fields)}")
    if "seed" in grid:
        _fail(f"{where}.seed", "the run's `seeds` set the SFT seed; a grid cannot")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            _fail(f"{where}.{key}", f"must be a non-empty list of values, got {values!r}")
        dups = [v for i, v in enumerate(values) if any(v == w and type(v) is type(w) for w in values[:i])]
        if dups:
            _fail(f"{where}.{key}", f"{dups} listed more than once")
    names = list(grid_points({"params": {}, "grid": grid}))
    if len(names) < len(list(itertools.product(*grid.values()))):
        _fail(where, "two grid points would share one folder name: list each value once, written alike")
    for point in names:  # checked even without a base config to lay the grid over
        _check_point_name(where, point)
    for base_where, base in bases:
        _check_grid_points(
            grid_points({"params": base, "grid": grid}),
            grid,
            where,
            base_where,
            SFTConfig.from_dict,
            fields=fields,
            always_name_point=True,
        )


def _check_recipe_sft_grid(config: dict, name: str, raw: dict) -> None:
    """A recipe's warm-up grid (its own `sft_grid`, else llm.sft_grid) over its sft, on every dataset."""
    where = f"llm.latent.{name}"
    if raw.get("warmup_from") is not None:
        if raw.get("sft_grid"):
            _fail(
                f"{where}.sft_grid",
                f"the recipe reuses the warm-up of {raw['warmup_from']!r} (`warmup_from`) and "
                "trains none: set sft_grid on that recipe",
            )
        return
    grid_where = f"{where}.sft_grid" if "sft_grid" in raw else "llm.sft_grid"
    _check_sft_grid(grid_where, raw["sft_grid"] if "sft_grid" in raw else config["llm"].get("sft_grid"), [])
    grid = sft_grid(config, name)
    if not grid:
        return
    per_dataset = raw.get("per_dataset") or {}
    for ds, over in per_dataset.items():
        fixed = sorted(set((over or {}).get("sft") or {}) & set(grid))
        if fixed:
            _fail(
                f"{where}.per_dataset.{ds}.sft",
                f"{fixed} are searched by the warm-up's grid ({grid_where}), which would replace these values",
            )
    bases = [
        (f"{where}.sft" if ds is None else f"{where}.per_dataset.{ds}.sft", latent_recipe(config, name, ds)["sft"])
        for ds in [None, *per_dataset]
    ]
    _check_sft_grid(grid_where, grid, bases)


def _check_head(where: str, recipe: dict) -> None:
    import inspect

    from latentrec.llm.latent import head_class

    head = recipe["head"]
    try:
        cls = head_class(head)
    except InputError as err:
        _fail(f"{where}.head", str(err))
    params = {
        k: p
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k not in ("self", "hidden_size") and p.kind is p.POSITIONAL_OR_KEYWORD
    }
    options = recipe.get("head_options") or {}
    unknown = sorted(set(options) - set(params))
    if unknown:
        _fail(f"{where}.head_options", f"head {head!r} has no option(s) {unknown}; known: {sorted(params)}")
    for key, value in options.items():
        try:
            check_value(key, value, params[key].annotation, at_least=1 if key in ("n_factors", "gate_hidden") else None)
        except ValueError as err:
            _fail(*_field_path(f"{where}.head_options", err))


def _check_method(config: dict, m: str, c: dict) -> None:
    fail = _fail
    family = c["family"]
    known = sorted(RECOMMENDER_FAMILIES | LLM_FAMILIES)
    if family not in known and not is_class_spec(family):
        fail(f"methods.{m}.family", f"unknown family {family!r}; known: {known}, or {SPEC_FORM}")
    if is_class_spec(family):  # a researcher's own class: importable here means importable by the jobs
        from latentrec.baselines.registry import family_class

        try:
            family_class(family)
        except InputError as err:
            fail(f"methods.{m}.family", str(err))
    group = "recommender" if is_recommender_family(family) else family
    allowed = METHOD_COMMON_KEYS | FAMILY_KEYS[group]
    for key in c:
        if key not in allowed:
            fail(f"methods.{m}.{key}", f"family {family!r} does not read it (it reads: {sorted(allowed)})")
    extra = set(c.get("seeds") or []) - {int(s) for s in config["seeds"]}
    if extra:
        fail(f"methods.{m}.seeds", f"{sorted(extra)} not in the run's `seeds` {config['seeds']}")
    for ds in c.get("datasets") or []:
        if ds not in config["datasets"]:
            fail(f"methods.{m}.datasets", f"{ds!r} is not a dataset ({sorted(config['datasets'])})")
    if family == "latent":
        if "recipe" not in c:
            fail(f"methods.{m}", "a latent method needs `recipe:` (a key of llm.latent)")
        recipes = config["llm"].get("latent") or {}
        if c["recipe"] not in recipes:
            fail(f"methods.{m}.recipe", f"no recipe {c['recipe']!r} under llm.latent (known: {sorted(recipes)})")
    if group == "recommender":
        from latentrec.baselines.registry import check_params

        _check_grid_points(
            grid_points(c),
            c.get("grid") or {},
            f"methods.{m}.grid",
            f"methods.{m}.params",
            lambda params: check_params(family, params),
            errors=(ValueError,),
        )


def _check_decode(config: dict) -> None:
    """Every decode block as the decode jobs build its DecodeConfig: an LLM method's own `decode`, and the
    Figure 9 timing's (report.flr.timing: its `decode`, then its `per_method` entry, laid over the method's)."""
    from latentrec.llm.decoding import DecodeConfig

    fields = DecodeConfig.__dataclass_fields__
    timing = (config["report"].get("flr") or {}).get("timing") or {}
    for m, c in config["methods"].items():
        if c.get("family") not in LLM_FAMILIES:
            continue
        own = c.get("decode") or {}
        if c["family"] == "latent" and own.get("cot") is not None:
            _fail(
                f"methods.{m}.decode.cot",
                "text reasoning (CoT) is for a plain backbone (family llm), not a latent-reasoning model",
            )
        blocks = [(f"methods.{m}.decode", own, "")]
        if m in (timing.get("methods") or []):
            timed = {**own, **(timing.get("decode") or {}), **((timing.get("per_method") or {}).get(m) or {})}
            blocks.append(("report.flr.timing", timed, f" (the timing of {m}, laid over methods.{m}.decode)"))
        for where, block, note in blocks:
            try:
                DecodeConfig.from_dict(block)
            except (ValueError, TypeError) as err:
                path, msg = _field_path(where, err, fields)
                _fail(path, msg + note)


# Recipe keys a dataset may override (`per_dataset`): what the warm-up trains, never what shapes the DAG.

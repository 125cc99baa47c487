"""Small file helpers shared by every stage: atomic writes, JSON/YAML dumps, progress bars."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import yaml
from tqdm.auto import tqdm


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Readers (and Snakemake) therefore never see a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_yaml(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_yaml(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def progress(iterable=None, **kwargs):
    """tqdm that stays quiet when stderr is not a terminal and LATENTREC_PROGRESS is unset.

    Snakemake logs stay readable (one final line), while interactive runs get a live bar.
    """
    force = os.environ.get("LATENTREC_PROGRESS")
    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = False if force == "1" else (force == "0")
    kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 10.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=disable, **kwargs)

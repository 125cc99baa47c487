"""Classes the config names as `module:Class`: a researcher's own recommender family or latent head.

A registry name (`sasrec`, `flr`) picks a built-in class; a name with a colon imports `module` and takes its
`Class`, so a new family or head is one module anywhere on the Python path plus one config entry. The jobs find
the module as the DAG build does: the rules keep the PYTHONPATH Snakemake was started with (docs/extending.md).
A leaf module without torch: config.py asks `is_class_spec` at DAG build.
"""

from __future__ import annotations

import importlib

from latentrec.errors import InputError

SPEC_FORM = "`module:Class` (a module on the Python path, e.g. my_recs.toy:ToyRec)"


def is_class_spec(name) -> bool:
    return isinstance(name, str) and ":" in name


def import_class(spec: str, base: type, what: str) -> type:
    """The class `spec` ("package.module:Class") names, checked to be a subclass of `base`.
    Raises InputError naming the spec, what it was meant to be and why it cannot be used."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise InputError(f"{what} {spec!r}: write it as {SPEC_FORM}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # ModuleNotFoundError included; the module's own failing imports too
        raise InputError(
            f"{what} {spec!r}: cannot import {module_name!r} ({err}); put its folder on PYTHONPATH "
            "before starting snakemake (the jobs inherit it)"
        ) from err
    cls = module
    for part in attr.split("."):  # a nested class: module:Outer.Inner
        cls = getattr(cls, part, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise InputError(f"{what} {spec!r}: {module_name} has no class {attr!r} deriving from {base.__name__}")
    return cls


def class_spec(cls: type) -> str:
    """The `module:Class` name that imports `cls` again (what a saved model records)."""
    return f"{cls.__module__}:{cls.__qualname__}"

"""Typed checks of option values, shared by the config validator and the dataclasses it builds.

A leaf module (no package imports): SFTConfig, LRGRPOConfig and the baselines' hyperparameter checks use
it, and config.py uses them, so the checks cannot live in config.py without an import cycle.
"""

from __future__ import annotations

_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _annotation_kinds(annotation) -> set[str] | None:
    """{"int", "float", "bool", "str", "None"} of a simple annotation (`int | None`); None: not checked."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", None) if annotation in (int, float, bool, str) else None
        if annotation is None:
            return None
    parts = {p.strip() for p in annotation.replace("Optional[", "").replace("]", "").split("|")}
    return parts if parts <= {"int", "float", "bool", "str", "None"} else None


def is_kind(value, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, {"int": int, "float": (int, float), "str": str}.get(kind, ()))


def check_value(
    name: str, value, annotation, *, at_least=None, above=None, below=None, choices=None, note: str = ""
) -> None:
    """Raise ValueError("<name>: must be <allowed>, got <value>") unless value fits the annotation and bounds."""
    kinds = _annotation_kinds(annotation)
    nullable = kinds is None or "None" in kinds
    if value is None and nullable:
        return
    ok = value is not None and (kinds is None or any(is_kind(value, k) for k in kinds))
    if ok and choices is not None:
        ok = value in choices
    if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = (
            (at_least is None or value >= at_least)
            and (above is None or value > above)
            and (below is None or value < below)
        )
    if ok:
        return
    if choices is not None:
        allowed = f"one of {sorted(choices)}"
    else:
        words = [_KIND_WORDS[k] for k in ("int", "float", "bool", "str") if kinds and k in kinds]
        if "an integer" in words and "a number" in words:
            words.remove("an integer")
        allowed = " or ".join(words) or "a value"
        bounds = [
            f">= {at_least}" if at_least is not None else "",
            f"> {above}" if above is not None else "",
            f"< {below}" if below is not None else "",
        ]
        allowed += "".join(f" {b}" for b in bounds if b)
    if nullable and kinds is not None:
        allowed += " or null"
    hint = ""
    if isinstance(value, str) and kinds and "float" in kinds:
        try:
            float(value)
            hint = f" (YAML reads {value} as text: write it with a dot, e.g. 3.0e-4)"
        except ValueError:
            pass
    raise ValueError(f"{name}: must be {allowed}{note}, got {value!r}{hint}")


def check_options(
    cls, d: dict | None, what: str, *, at_least=None, above=None, below=None, choices=None, notes=None
) -> dict:
    """Check a config dict before the dataclass `cls` is built from it: known fields, values of each field's
    annotated type (`int`, `float`, `bool`, `str`; `| None` allows null) within the bounds given per field
    (`at_least`: >=, `above`: >, `below`: <) or among `choices`. Raises ValueError naming the field and
    what it allows; returns a copy of d."""
    d = dict(d or {})
    fields = cls.__dataclass_fields__
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; known: {sorted(fields)}")
    for key, value in d.items():
        check_value(
            key,
            value,
            fields[key].type,
            at_least=(at_least or {}).get(key),
            above=(above or {}).get(key),
            below=(below or {}).get(key),
            choices=(choices or {}).get(key),
            note=(notes or {}).get(key, ""),
        )
    return d

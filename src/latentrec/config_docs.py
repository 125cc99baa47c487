"""The key tables of config/README.md that describe a config dataclass, generated from the fields' help
(`field(..., metadata={"help": ...})`), so that a default and its description have one home: the dataclass.

A generated table sits between `<!-- generated: NAME ... -->` and `<!-- end generated -->`; NAME is the
first item of an entry of DOCUMENTED. Rewrite them with `make docs` (python -m latentrec.config_docs);
tests/test_config_docs.py fails while config/README.md differs from what this module would write.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "config" / "README.md"

# (table name, the config key the dataclass is read from, "module:Class"): one line per documented dataclass.
DOCUMENTED = [
    ("sft", "llm.sft", "latentrec.llm.sft:SFTConfig"),
    ("rl", "llm.latent.<recipe>.rl", "latentrec.llm.grpo:LRGRPOConfig"),
    ("decode", "methods.<name>.decode", "latentrec.llm.decoding:DecodeConfig"),
]

_BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+)\b[^\n]*?-->\n.*?<!-- end generated -->", re.S)


def documented_class(spec: str) -> type:
    """The dataclass named by "module:Class"."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def format_default(value) -> str:
    """A default as the YAML config writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def field_table(cls: type) -> str:
    """| key | default | meaning | of every field of the dataclass `cls`, in declaration order."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help")
        if not help_text:
            raise ValueError(f"{cls.__name__}.{f.name} has no metadata help: config/README.md documents every field")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        cell = help_text.replace("|", "\\|")  # a bar would end the Markdown cell
        lines.append(f"| `{f.name}` | {format_default(default)} | {cell} |")
    return "\n".join(lines)


def block(name: str, key: str, spec: str) -> str:
    """One generated block: its markers (which say where it comes from) around the table."""
    return (
        f"<!-- generated: {name} (`{key}`: the field help of {spec.replace(':', '.')}; `make docs` rewrites "
        f"it) -->\n{field_table(documented_class(spec))}\n<!-- end generated -->"
    )


def render(text: str) -> str:
    """`text` (config/README.md) with every generated block rewritten; each DOCUMENTED entry must have one."""
    entries = {name: (key, spec) for name, key, spec in DOCUMENTED}
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(entries))
    missing = sorted(set(entries) - set(found))
    if unknown or missing or len(found) != len(set(found)):
        raise ValueError(
            f"config/README.md: generated blocks {found}; expected each of {sorted(entries)} once"
            + (f" (unknown: {unknown})" if unknown else "")
            + (f" (missing: {missing})" if missing else "")
        )
    return _BLOCK.sub(lambda m: block(m.group("name"), *entries[m.group("name")]), text)


def write_readme(path: Path = README) -> bool:
    """Rewrite the generated tables of `path`; True when it changed."""
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    changed = write_readme(Path(sys.argv[1]) if len(sys.argv) > 1 else README)
    print(f"config/README.md: generated tables {'rewritten' if changed else 'already current'}")

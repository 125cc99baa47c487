"""config/README.md's key tables of the config dataclasses are generated from the fields' help: the README
must be what `make docs` writes, and every field must say what it does."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from latentrec import config_docs


def test_readme_tables_are_current():
    text = config_docs.README.read_text(encoding="utf-8")
    assert config_docs.render(text) == text, "config/README.md is stale: run `make docs`"


@pytest.mark.parametrize("name, key, spec", config_docs.DOCUMENTED)
def test_every_field_has_help_and_a_row(name, key, spec):
    cls = config_docs.documented_class(spec)
    table = config_docs.field_table(cls)
    assert all(f"| `{f.name}` |" in table for f in dataclasses.fields(cls))


def test_table_rows_show_defaults_as_yaml_and_escape_bars():
    @dataclass
    class Toy:
        rate: float = field(default=3e-4, metadata={"help": "a | b"})
        limit: int | None = field(default=None, metadata={"help": "none"})
        on: bool = field(default=True, metadata={"help": "flag"})
        style: str = field(default="clean", metadata={"help": "text"})

    assert config_docs.field_table(Toy).splitlines()[2:] == [
        "| `rate` | 0.0003 | a \\| b |",
        "| `limit` | null | none |",
        "| `on` | true | flag |",
        "| `style` | `clean` | text |",
    ]


def test_a_field_without_help_is_refused():
    @dataclass
    class Toy:
        rate: float = 1.0

    with pytest.raises(ValueError, match="Toy.rate has no metadata help"):
        config_docs.field_table(Toy)


def test_a_missing_or_unknown_block_is_refused():
    with pytest.raises(ValueError, match="missing"):
        config_docs.render("no generated tables here\n")
    with pytest.raises(ValueError, match="unknown"):
        config_docs.render(
            "".join(
                f"<!-- generated: {n} -->\n<!-- end generated -->\n"
                for n in [*(d[0] for d in config_docs.DOCUMENTED), "nope"]
            )
        )

"""docs/map.md names only things that exist: files, `path::function` (classes and methods too), Snakemake
rules, and the config keys of its last table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "map.md"
REPO_DIRS = ("src/", "docs/", "config/", "workflow/", "tests/", "bench/", "envs/", "profiles/")


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def defined_names(path: Path) -> set[str]:
    """`f`, `C`, `C.m` of a module's top-level functions, classes and their methods."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}.{n.name}" for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
    return names


def snakemake_rules() -> set[str]:
    text = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))])
    return set(re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", text, re.M))


def missing_references(text: str) -> list[str]:
    rules, problems = snakemake_rules(), []
    for ref in backticked(text):
        if ref.startswith("rule "):
            if ref[5:] not in rules:
                problems.append(f"`{ref}`: no such Snakemake rule")
        elif "::" in ref:
            path, name = ref.split("::", 1)
            if not (ROOT / path).is_file():
                problems.append(f"`{ref}`: no file {path}")
            elif name not in defined_names(ROOT / path):
                problems.append(f"`{ref}`: {path} defines no {name}")
        elif ref.startswith(REPO_DIRS) and not (ROOT / ref).exists():
            problems.append(f"`{ref}`: no such path")
    return problems


def config_keys_missing(text: str) -> list[str]:
    """Key paths in the first column of the config table exist in config/config.yaml or config/paper.yaml;
    sub-keys in parentheses, `llm.latent` (`head`, ...), exist somewhere under the key before them."""
    configs = [yaml.safe_load((ROOT / "config" / f).read_text()) for f in ("config.yaml", "paper.yaml")]
    section = text.split("## Config blocks", 1)[1]
    problems = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        outside, _, inside = cell.partition("(")
        keys = backticked(outside)
        for key in keys:
            if not any(_has(c, key.split(".")) for c in configs):
                problems.append(f"config key `{key}` is in neither config/config.yaml nor config/paper.yaml")
        for sub in backticked(inside):
            if not any(_under(_get(c, keys[-1].split(".")), sub) for c in configs):
                problems.append(f"config key `{sub}` is nowhere under `{keys[-1]}` in config/config.yaml or paper.yaml")
    return problems


def _get(node, parts):
    for p in parts:
        node = node.get(p) if isinstance(node, dict) else None
    return node


def _under(node, key) -> bool:
    if isinstance(node, dict):
        return key in node or any(_under(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_under(v, key) for v in node)
    return False


def _has(node, parts) -> bool:
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


def test_the_checker_catches_wrong_references():
    bad = "`rule no_such_rule` `src/latentrec/llm/flr.py::NoSuch` `src/latentrec/nope.py` `src/latentrec/llm/flr.py::FLRHead.factorise`"
    assert missing_references(bad) == [
        "`rule no_such_rule`: no such Snakemake rule",
        "`src/latentrec/llm/flr.py::NoSuch`: src/latentrec/llm/flr.py defines no NoSuch",
        "`src/latentrec/nope.py`: no such path",
    ]


def test_every_reference_in_the_map_exists():
    text = MAP.read_text(encoding="utf-8")
    assert len(backticked(text)) > 100  # the map really is parsed
    problems = missing_references(text) + config_keys_missing(text)
    assert not problems, "docs/map.md:\n  " + "\n  ".join(problems)


def test_readme_links_the_map():
    assert "docs/map.md" in (ROOT / "README.md").read_text(encoding="utf-8")

"""The package's import graph: every module imports on its own, no cycles, and three layers.

Layers, top down: the command layer (`latentrec.commands`, and `__main__`: argument parsing and the `cmd_*`
functions) may import anything and nothing else imports it; pipeline support (config checks, the cost plan, the
GPU lease: the other top-level modules) may import the library; the library (LIBRARY_PACKAGES and the shared
leaves) imports only itself. Within the library `llm` never imports `report`. Registries (baselines/registry.py,
llm/latent.py's HEADS) import their implementations, never the other way round. The graph is read with `ast` from
the source, counting every import, function-local ones and literal `__import__` / `importlib.import_module` calls
included, so a cycle cannot hide inside a function.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "latentrec"
COMMANDS = "latentrec.commands"
LIBRARY_PACKAGES = ("latentrec.data", "latentrec.baselines", "latentrec.eval", "latentrec.llm", "latentrec.report")
SHARED_LEAVES = {"latentrec", "latentrec.errors", "latentrec.io_utils", "latentrec.checks", "latentrec.runs"}


def package_modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def command_layer(modules) -> set[str]:
    return {"latentrec.__main__"} | {m for m in modules if in_package(m, COMMANDS)}


def is_library(module: str) -> bool:
    return module in SHARED_LEAVES or any(in_package(module, p) for p in LIBRARY_PACKAGES)


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules) -> set[str]:
    """Package modules that `module` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, path, node)
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import submodule`
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_sees_cycles_and_function_local_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import x\n")
    (pkg / "c.py").write_text("def g():\n    __import__('pkg.a')\n")
    modules = {f"pkg.{n}": pkg / f"{n}.py" for n in "abc"}
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    graph["pkg.c"] = set()
    assert find_cycle(graph) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_the_command_layer_imports_command_modules():
    graph = import_graph()
    layer = command_layer(graph)
    assert len(layer) > 5, f"the command layer was not found under {COMMANDS}: {sorted(layer)}"
    bad = sorted(f"{m} imports {sorted(deps & layer)}" for m, deps in graph.items() if m not in layer and deps & layer)
    assert not bad, "modules below the command layer reach up into it: " + "; ".join(bad)


def test_every_stage_module_is_on_the_command_line():
    from latentrec.commands.main import STAGES

    stages = {
        m
        for m in command_layer(package_modules())
        if m.count(".") == 2 and m not in (f"{COMMANDS}.main", f"{COMMANDS}.args")
    }
    assert stages == {s.__name__ for s in STAGES}, "a stage module is missing from commands/main.py's STAGES"


def top_level_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a module's source (`argparse`, `torch`, `latentrec`, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_command_layer_parses_arguments():
    modules = package_modules()
    layer = command_layer(modules)
    bad = sorted(m for m, path in modules.items() if m not in layer and "argparse" in top_level_imports(path))
    assert not bad, f"argparse outside {COMMANDS}: {bad}"


def test_the_library_imports_neither_pipeline_support_nor_commands():
    graph = import_graph()
    bad = sorted(
        f"{m} imports {sorted(d for d in deps if not is_library(d))}"
        for m, deps in graph.items()
        if is_library(m) and any(not is_library(d) for d in deps)
    )
    assert not bad, "library modules reach up into pipeline support or commands: " + "; ".join(bad)


def test_llm_never_imports_report():
    graph = import_graph()
    bad = sorted(
        f"{m} imports {sorted(d for d in deps if in_package(d, 'latentrec.report'))}"
        for m, deps in graph.items()
        if in_package(m, "latentrec.llm") and any(in_package(d, "latentrec.report") for d in deps)
    )
    assert not bad, "llm reaches into report: " + "; ".join(bad)


# Each module imported alone: third-party libraries are loaded once up front (they take most of the time),
# then before every module every `latentrec` module is dropped from sys.modules, so each import starts from
# nothing of the package, as it would in a fresh interpreter.
_ISOLATED = r"""
import importlib, json, sys, traceback
import numpy, pandas, pyarrow, torch, transformers, scipy, yaml  # noqa: F401
failures = {}
for name in json.loads(sys.argv[1]):
    for m in [m for m in sys.modules if m == "latentrec" or m.startswith("latentrec.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-4)
print(json.dumps(failures))
"""


def test_every_module_imports_on_its_own():
    names = sorted(package_modules())
    done = subprocess.run(
        [sys.executable, "-c", _ISOLATED, json.dumps(names)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{m}:\n{tb}" for m, tb in failures.items())

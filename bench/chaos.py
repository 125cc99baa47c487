"""Fault injection: SIGKILL the whole pipeline at seeded random moments, rerun the README command, compare.

    python bench/chaos.py --kills 10 --seed 0 --workdir /tmp/chaos     # the default config (minutes per run)
    python bench/chaos.py --config my_small.yaml --kills 3              # any config (tests use a tiny one)

What a power cut, an OOM kill of the main process, a closed login session or a preempted node does: every
process of the run dies at once (SIGKILL to its process group, so no clean-up runs). After each kill the same
command is started again, with no extra flags; the workflow profile (profiles/default) and the stale-lock
check in the Snakefile must bring it to the end. Then every compared output of the interrupted run must be
byte-identical to an uninterrupted run's. Outputs that measure time (TIMING_OUTPUTS) differ between any two
runs; they are listed apart and not compared.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from latentrec.recovery import live_snakemakes  # noqa: E402

# Outputs that hold wall-clock times: they differ between any two runs, killed or not.
TIMING_OUTPUTS = (
    re.compile(r"(^|/)inference_time\.json$"),
    re.compile(r"^results/tables/latentr3_cost\.\w+$"),
    re.compile(r"^results/tables/flr_fig9_inference_time\.\w+$"),
)
COMPARED = (
    re.compile(r"(^|/)metrics\.json$"),
    re.compile(r"(^|/)predictions\.parquet$"),
    re.compile(r"^results/tables/[^/]+\.(md|csv|tex|json|png)$"),
)


@dataclass
class Kill:
    after_s: float
    running: list[str]  # the rules with a started, unfinished job at the moment of the kill


@dataclass
class ChaosResult:
    kills: list[Kill] = field(default_factory=list)
    reruns: int = 0
    compared: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    timing: list[str] = field(default_factory=list)


def readme_command(workdir: Path, cores: int) -> list[str]:
    """`snakemake --cores N` as the README runs it, pointed at a scratch working directory."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
    ]


def _env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", LATENTREC_STATUS_EVERY="0")


def running_rules(log: str) -> list[str]:
    """Rules whose jobs the log shows started and not finished."""
    started = {
        jobid: rule
        for rule, jobid in re.findall(r"^(?:local)?rule (\w+):\n(?:[ \t].*\n)*?[ \t]+jobid: (\d+)", log, flags=re.M)
    }
    finished = set(re.findall(r"Finished jobid: (\d+)", log))
    return sorted({rule for jobid, rule in started.items() if jobid not in finished})


def run_once(workdir: Path, cores: int, kill_after: float | None, log_path: Path) -> tuple[int | None, str]:
    """One run of the README command in its own process group; SIGKILL the group after `kill_after` s.
    Returns (exit code, or None if killed; the run's log)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            readme_command(workdir, cores),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, log_path.read_text()


def _outputs(workdir: Path) -> set[str]:
    return {str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*") if p.is_file()}


def compare(reference: Path, recovered: Path, result: ChaosResult) -> None:
    for rel in sorted(_outputs(reference)):
        if not any(c.search(rel) for c in COMPARED):
            continue
        if any(t.search(rel) for t in TIMING_OUTPUTS):
            result.timing.append(rel)
        elif not (recovered / rel).exists():
            result.missing.append(rel)
        else:
            result.compared.append(rel)
            if not filecmp.cmp(reference / rel, recovered / rel, shallow=False):
                result.different.append(rel)


def chaos(
    config: dict,
    reference: Path,
    recovered: Path,
    kills: int,
    seed: int,
    cores: int = 2,
    first_after: float = 4.0,
    spread: float | None = None,
    max_reruns: int = 50,
) -> ChaosResult:
    """Run `config` once uninterrupted in `reference` (unless it holds a finished run of the same config),
    then in `recovered` with `kills` SIGKILLs at seeded moments (each `first_after` + U(0, spread) seconds
    after a start; spread defaults to the reference's wall time / kills, so the kills fall across the whole
    pipeline), rerunning the same command until it ends."""
    import yaml

    (recovered / "config").mkdir(parents=True, exist_ok=True)
    (recovered / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    done = reference / "results" / "tables" / "table1.md"
    running = (reference / "config" / "config.yaml").exists() and live_snakemakes(reference)
    if running or (done.exists() and yaml.safe_load((reference / "config" / "config.yaml").read_text()) == config):
        wall = float(spread * kills) if spread else 300.0
    else:
        (reference / "config").mkdir(parents=True, exist_ok=True)
        (reference / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        t0 = time.perf_counter()
        rc, log = run_once(reference, cores, None, reference / "chaos_reference.log")
        if rc != 0:
            raise RuntimeError(f"the uninterrupted run failed (rc {rc}):\n{log[-3000:]}")
        wall = time.perf_counter() - t0
    spread = wall / max(kills, 1) if spread is None else spread
    rng = random.Random(seed)
    result = ChaosResult()
    while result.reruns < max_reruns:
        kill_after = first_after + rng.uniform(0, spread) if len(result.kills) < kills else None
        rc, log = run_once(recovered, cores, kill_after, recovered / f"chaos_run{result.reruns}.log")
        result.reruns += 1
        if rc is None:
            result.kills.append(Kill(round(kill_after, 1), running_rules(log)))
            continue
        if rc != 0:
            raise RuntimeError(
                f"run {result.reruns} after {len(result.kills)} kill(s) failed (rc {rc}): the README "
                f"command did not recover:\n{log[-3000:]}"
            )
        if len(result.kills) >= kills:
            break
    while live_snakemakes(reference):  # an uninterrupted reference run started beside this one: let it finish
        time.sleep(10)
    compare(reference, recovered, result)
    return result


def summary(result: ChaosResult) -> str:
    rules = sorted({r for k in result.kills for r in k.running})
    lines = [
        f"{len(result.kills)} kills at seeded moments across {len(rules)} rules ({', '.join(rules) or '-'}): "
        f"{result.reruns} runs of the README command in all, no flags added",
        f"compared {len(result.compared)} outputs (metrics.json, predictions.parquet, tables): "
        f"{len(result.compared) - len(result.different)} identical, {len(result.different)} different, "
        f"{len(result.missing)} missing",
        f"timing outputs, not compared: {', '.join(result.timing) or '-'}",
    ]
    lines += [
        f"  kill {i + 1} at {k.after_s:.1f} s while running: {', '.join(k.running) or '(DAG build)'}"
        for i, k in enumerate(result.kills)
    ]
    lines += [f"  DIFFERENT: {p}" for p in result.different] + [f"  MISSING: {p}" for p in result.missing]
    return "\n".join(lines)


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/latentrec_chaos"))
    ap.add_argument(
        "--spread",
        type=float,
        default=None,
        help="kill within first_after + U(0, spread) s of each start (default: the reference run's wall time / kills)",
    )
    ap.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a finished uninterrupted run of the same config (a working directory) to compare with",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    a = ap.parse_args()
    shutil.rmtree(a.workdir / "recovered", ignore_errors=True)
    config = yaml.safe_load(a.config.read_text())
    paper = Path(config["report"]["paper_results"])  # the scratch folders have no config/ of their own
    config["report"]["paper_results"] = str(paper if paper.is_absolute() else ROOT / paper)
    result = chaos(
        config,
        a.reference or a.workdir / "reference",
        a.workdir / "recovered",
        a.kills,
        a.seed,
        a.cores,
        spread=a.spread,
    )
    print(summary(result))
    if a.json:
        a.json.write_text(json.dumps(result, default=vars, indent=2))
    sys.exit(1 if result.different or result.missing else 0)


if __name__ == "__main__":
    main()

"""Before vs after a change: the same benchmark on two source trees, alternated, in one run.

    python bench/compare_trees.py --before /path/to/old/checkout --rounds 2 -- \\
        decoding_vs_generate.py --n 32 --skip-reference --ours-batch-sizes 16
    python bench/compare_trees.py --before /path/to/old/checkout -- sft_throughput.py --steps 2

Each tree runs its own copy of the bench script against its own `src/` (the script's imports follow the tree's
layout), in the order before, after, after, before, ... so that a drifting machine load falls on both alike.
Every numeric field of the bench's JSON (nested keys joined with '.') is reported per tree as the mean over the
rounds, with the after/before ratio. The load average is recorded around each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def run(tree: Path, script: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        env = dict(os.environ, PYTHONPATH=str(tree / "src"))
        load = os.getloadavg()[0]
        subprocess.run(
            [sys.executable, str(tree / "bench" / script), *args, "--json", str(out)],
            cwd=tree,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        result = flatten(json.loads(out.read_text()))
    result["load_average_1min_start"] = load
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the old checkout (a git worktree of the old commit)")
    ap.add_argument("--after", type=Path, default=ROOT, help="the new checkout (default: this one)")
    ap.add_argument("--rounds", type=int, default=2, help="before/after pairs, alternating which goes first")
    ap.add_argument("--keys", default="", help="comma-separated substrings: report only keys containing one")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-run numbers here")
    ap.add_argument("bench", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a script under bench/ and its arguments")
    a = ap.parse_args(argv)
    bench = a.bench[1:] if a.bench[:1] == ["--"] else a.bench
    script, args = bench[0], bench[1:]
    runs = {"before": [], "after": []}
    for r in range(a.rounds):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            runs[name].append(run(a.before if name == "before" else a.after, script, args))
            print(f"round {r + 1}: {name} done (load {runs[name][-1]['load_average_1min_start']:.2f})", flush=True)
    wanted = [k for k in a.keys.split(",") if k]
    keys = [k for k in runs["after"][0] if k in runs["before"][0] and (not wanted or any(w in k for w in wanted))]
    print(f"\n{script} {' '.join(args)}: mean over {a.rounds} alternated round(s)")
    print(f"{'key':60s} {'before':>14s} {'after':>14s} {'after/before':>13s}")
    for k in keys:
        b = sum(x[k] for x in runs["before"]) / a.rounds
        f = sum(x[k] for x in runs["after"]) / a.rounds
        ratio = f / b if b else float("nan")
        print(f"{k:60s} {b:14.6g} {f:14.6g} {ratio:13.3f}")
    if a.json:
        a.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()

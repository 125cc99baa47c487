"""The end-of-run summary (Snakefile `onsuccess`): wall time per rule from Snakemake's benchmark files,
where the run's tables and figures are, and the papers' figures this config does not draw (and why).

A benchmark file is `benchmarks/<rule>/<wildcards>.tsv` (or `benchmarks/<rule>.tsv` for a rule without
wildcards) in Snakemake's format: a header `s  h:m:s  max_rss  ...` and one row per repeat. A job that
re-ran overwrote its file, so the summary describes the latest run of every job that has one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RuleTime:
    jobs: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    peak_rss_mb: float | None = None


def _number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # Snakemake writes "NA" where it could not measure
        return None


def read_benchmark(path: Path) -> tuple[float, float | None]:
    """(mean wall seconds over the file's repeats, peak max_rss MB) of one benchmark TSV."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no `s` column); delete it or rerun its job")
    seconds = [s for s in (_number(r["s"]) for r in rows) if s is not None]
    rss = [m for m in (_number(r.get("max_rss")) for r in rows) if m is not None]
    return (sum(seconds) / len(seconds) if seconds else 0.0), (max(rss) if rss else None)


def rule_times(bench_dir: str | Path) -> dict[str, RuleTime]:
    """{rule: jobs, summed and longest wall time, peak RSS} over every benchmark file under bench_dir."""
    bench_dir = Path(bench_dir)
    out: dict[str, RuleTime] = {}
    for path in sorted(bench_dir.rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        seconds, rss = read_benchmark(path)
        t = out.setdefault(rule, RuleTime())
        t.jobs += 1
        t.total_s += seconds
        t.max_s = max(t.max_s, seconds)
        if rss is not None:
            t.peak_rss_mb = rss if t.peak_rss_mb is None else max(t.peak_rss_mb, rss)
    return out


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_summary(times: dict[str, RuleTime], outputs_dir: str | Path, not_drawn: list[str] = ()) -> str:
    """Markdown: a table of rules by total wall time, then the tables and figures under outputs_dir, then
    `not_drawn` (one line each: a paper figure this config leaves out, and why)."""
    lines = [
        "## Wall time per rule (benchmarks/)",
        "",
        "| rule | jobs | total h:m:s | longest job | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for rule, t in sorted(times.items(), key=lambda kv: (-kv[1].total_s, kv[0])):
        rss = "" if t.peak_rss_mb is None else f"{t.peak_rss_mb:.0f}"
        lines.append(f"| {rule} | {t.jobs} | {_hms(t.total_s)} | {_hms(t.max_s)} | {rss} |")
    total = sum(t.total_s for t in times.values())
    lines.append(f"| all (job time, not elapsed) | {sum(t.jobs for t in times.values())} | {_hms(total)} | | |")
    outputs_dir = Path(outputs_dir)
    files = sorted(outputs_dir.glob("*")) if outputs_dir.is_dir() else []
    tables = [f for f in files if f.suffix in (".md", ".csv", ".tex")]
    figures = [f for f in files if f.suffix in (".png", ".pdf", ".svg")]
    for title, group in (("Tables", tables), ("Figures", figures)):
        lines += ["", f"## {title} ({outputs_dir})", ""]
        lines += [f"- {f}" for f in group] or ["- none"]
    if not_drawn:
        lines += ["", "## Not drawn by this config", "", *(f"- {n}" for n in not_drawn)]
    return "\n".join(lines) + "\n"


def run_summary(
    bench_dir: str | Path = "benchmarks",
    outputs_dir: str | Path = "results/tables",
    out: str | Path | None = None,
    not_drawn: list[str] = (),
) -> str:
    """The summary as text; also written to `out` when given."""
    text = format_summary(rule_times(bench_dir) if Path(bench_dir).is_dir() else {}, outputs_dir, not_drawn)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text

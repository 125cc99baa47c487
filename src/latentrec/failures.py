"""Failures a user can fix, told in one message that names the file or the knob and the fix.

The command layer catches what escapes a command and asks `explain` for a message; a failure it does not
know keeps its traceback. Three kinds are known:

- the disk filled during a write (ENOSPC): which output, how much had been written, how much is free;
- the process ran out of memory (an allocation failed: `ulimit -v`, a container limit, a full GPU): which
  knob lowers this command's peak;
- a file damaged after it was written (truncated Parquet or safetensors): raised by the readers in
  `io_utils` as `DamagedFileError`, an `InputError` that already says how to regenerate the file.

A job killed by the kernel's OOM killer cannot say anything itself (SIGKILL): the workflow's shell suffix
reports it from the exit status and the cgroup's oom_kill counter (`oom_kill_note`).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# The knob that lowers each command's peak memory, as a config key path.
MEMORY_KNOBS = {
    "sft": "llm.sft.micro_batch (effective_batch stays: more accumulation steps)",
    "latent-sft": "llm.latent.<recipe>.sft.micro_batch (or llm.sft.micro_batch)",
    "latent-rl": "llm.latent.<recipe>.rl.groups_per_step, then rl.group_size",
    "decode": "methods.<method>.decode.batch_size (prompts decoded together), then decode.num_beams",
    "time-decode": "report.flr.timing.decode.batch_size",
    "flr-factors": "report.flr.factors.rows",
    "fit-predict": "methods.<method>.params.batch_size (and n_negatives)",
    "item-embeddings": "the AlphaRec method's item embedding batch",
}
GENERIC_KNOB = "a smaller batch size for this stage (config/README.md lists each stage's batch keys)"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        text = str(e)
        if "No space left on device" in text or "StorageFull" in text or "os error 28" in text:
            return True
    return False


def is_out_of_memory(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
            return True
        text = str(e)
        if isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()):
            return True
    return False


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _free_bytes(path: Path) -> tuple[int, Path]:
    here = path.resolve()
    while not here.exists() and here != here.parent:
        here = here.parent
    return shutil.disk_usage(here).free, here


def _human(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def disk_full_message(exc: BaseException, outputs: list[str]) -> str:
    """Which output did not fit, what it had written, what is free, and that a rerun redoes it."""
    path = None
    written = 0
    for e in _chain(exc):
        path = path or getattr(e, "latentrec_path", None) or getattr(e, "filename", None)
        written = max(written, getattr(e, "latentrec_written", 0) or 0)
    path = Path(path or (outputs[0] if outputs else "."))
    written = max(written, _size(path))
    free, where = _free_bytes(path)
    return (
        f"the disk is full: writing {path} failed after {_human(written)} ({_human(free)} free on the file "
        f"system of {where}); this output needs more than {_human(max(written, free))} free. Free space (or "
        "move results/ to a larger disk), then rerun the same command: the incomplete output is not kept, "
        "Snakemake redoes the job"
    )


def out_of_memory_message(command: str) -> str:
    knob = MEMORY_KNOBS.get(command, GENERIC_KNOB)
    return (
        f"`{command}` ran out of memory (an allocation failed). Lower {knob}; "
        "`python -m latentrec plan` estimates each job's peak"
    )


def explain(exc: BaseException, command: str, outputs: list[str]) -> str | None:
    """A message for a failure the user can fix, or None to keep the traceback."""
    if is_disk_full(exc):
        return disk_full_message(exc, outputs)
    if is_out_of_memory(exc):
        return out_of_memory_message(command)
    return None


def output_paths(args) -> list[str]:
    """The command's output paths among its parsed arguments (`--out`, `--rows`, `--metrics`, ...)."""
    out = []
    for key in ("out", "rows", "metrics", "predictions", "reviews", "meta", "output"):
        value = getattr(args, key, None)
        if isinstance(value, (str, os.PathLike)):
            out.append(str(value))
    return out


def oom_kill_note(exit_status: int, oom_kills_before: int | None, oom_kills_after: int | None) -> str | None:
    """What to tell when a job's shell saw `exit_status`: SIGKILL (137) with the cgroup's oom_kill counter
    raised means the kernel's OOM killer; SIGKILL without a counter to read is most likely it too."""
    if exit_status != 128 + 9:
        return None
    counted = oom_kills_before is not None and oom_kills_after is not None
    if counted and oom_kills_after > oom_kills_before:
        cause = "killed by the kernel's OOM killer (the cgroup's oom_kill count rose)"
    elif counted:
        return (
            "the job was killed by SIGKILL (exit 137), not by the OOM killer (the cgroup's oom_kill count did "
            "not rise): a user, a scheduler's time limit or a node shutdown"
        )
    else:
        cause = "killed by SIGKILL (exit 137), most likely by the kernel's OOM killer"
    return (
        f"the job was {cause}: it needed more memory than it had. Lower the batch knob of its stage "
        f"({'; '.join(f'{k}: {v}' for k, v in MEMORY_KNOBS.items())}), or give the rule more "
        "`mem_mb` (on SLURM: --set-resources <rule>:mem_mb=...)"
    )

"""Recovery after a crash: a lock left by a dead Snakemake is removed, a live one's is kept.

Snakemake writes its locks under `.snakemake/locks/` and removes them on exit; a run killed by SIGKILL,
an OOM kill or a power cut cannot, and the next run then stops with a LockException. The workflow calls
`clear_stale_locks` while it parses the Snakefile, before Snakemake checks the locks. The locks do not name
their owner, so "dead" means: no Snakemake process on this machine works in this folder. A run started from
another host on a shared file system is not visible here; the README says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def _is_snakemake(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    head = [os.path.basename(a) for a in cmd[:3]]
    return "snakemake" in head or ("-m" in cmd[:3] and "snakemake" in cmd[:4])


def _cwd(proc: psutil.Process) -> str | None:
    try:
        return proc.cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def live_snakemakes(workdir: str | os.PathLike) -> list[psutil.Process]:
    """Snakemake processes on this machine, other than this one and its ancestors, working in `workdir`."""
    here = os.path.realpath(workdir)
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents())}
    return [
        p
        for p in psutil.process_iter()
        if p.pid not in mine and _is_snakemake(p) and (cwd := _cwd(p)) and os.path.realpath(cwd) == here
    ]


def clear_stale_locks(workdir: str | os.PathLike = ".") -> str | None:
    """Remove `.snakemake/locks/*.lock` when no live Snakemake works in `workdir`; say what was done.

    With a live one the locks stay, and Snakemake refuses the second run as it should.
    """
    locks = sorted(Path(workdir, ".snakemake", "locks").glob("*.lock"))
    if not locks:
        return None
    live = live_snakemakes(workdir)
    if live:
        pids = ", ".join(str(p.pid) for p in live)
        return (
            f"another Snakemake is running in this folder (pid {pids}): its lock stays; wait for it to finish "
            "or stop it, then rerun the same command"
        )
    for lock in locks:
        lock.unlink(missing_ok=True)
    return (
        f"removed {len(locks)} stale lock file(s) of a Snakemake that is no longer running; "
        "outputs it left incomplete are redone"
    )

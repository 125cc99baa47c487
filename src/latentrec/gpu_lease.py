"""A small local GPU lease, so parallel Snakemake jobs on one workstation never share a device.

`snakemake --resources gpu=2` bounds how many GPUs run jobs at once but not WHICH ones. A GPU job is
wrapped as `python -m latentrec lease-gpus N -- <command>`: it takes exclusive file locks on N free
device ids, sets CUDA_VISIBLE_DEVICES for the command, and releases the locks when it exits (also on
a crash: the kernel drops flock locks with the process). Where CUDA_VISIBLE_DEVICES is already set
(by the user, or by SLURM for an allocation), the lease steps aside and runs the command as it is.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latentrec.errors import InputError


def visible_device_ids() -> list[str]:
    """Device ids on this machine: LATENTREC_GPU_IDS if set (e.g. "0,1"), else from nvidia-smi."""
    if os.environ.get("LATENTREC_GPU_IDS"):
        return [d.strip() for d in os.environ["LATENTREC_GPU_IDS"].split(",") if d.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def lock_dir() -> Path:
    d = Path(os.environ.get("LATENTREC_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "latentrec-gpu-locks"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def acquire(n: int, timeout_s: float = 3600, poll_s: float = 2.0) -> tuple[list[str], list]:
    """Lock n free device ids; returns (ids, open lock files). Waits while all are taken."""
    ids = visible_device_ids()
    if n > len(ids):
        raise InputError(
            f"this job needs {n} GPU(s) but {len(ids)} are visible (nvidia-smi or LATENTREC_GPU_IDS); "
            "lower the rule's gpu resource in the config or run on a machine with more GPUs"
        )
    deadline = time.monotonic() + timeout_s
    while True:
        held, handles = [], []
        for dev in ids:
            fh = open(lock_dir() / f"gpu{dev}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            held.append(dev)
            handles.append(fh)
            if len(held) == n:
                return held, handles
        for fh in handles:
            fh.close()  # closing drops the lock: never sit on a partial set
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {n} free GPU(s) among {ids} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def run_with_gpus(n: int, command: list[str]) -> int:
    env = dict(os.environ)
    if n <= 0:
        return subprocess.call(command, env=env)
    if "CUDA_VISIBLE_DEVICES" in env:  # said in the job's log: which devices a cluster job ran on
        job = f" by SLURM job {env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else ""
        print(
            f"lease-gpus: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} set{job}; no local lease", file=sys.stderr
        )
        return subprocess.call(command, env=env)
    ids, handles = acquire(n)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    print(f"lease-gpus: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr)
    try:
        return subprocess.call(command, env=env)
    finally:
        for fh in handles:
            fh.close()

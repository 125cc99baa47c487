"""Experiment tracking through accelerate's trackers: TensorBoard (the default: event files, no network),
Weights & Biases or MLflow (passed through to accelerate, offline unless their own settings say otherwise),
or none.

A trainer builds its Accelerator with :func:`accelerator_options`, then :func:`start`, :func:`log` per step
and :func:`finish`. Files go to OUT/tracking/<run name>/ (TensorBoard: events.out.tfevents.*), written by
the main process only: accelerate creates trackers and logs on the main process alone.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from pathlib import Path

from latentrec.errors import InputError

TRACKERS = ("tensorboard", "wandb", "mlflow", "none")
FOLDER = "tracking"  # under the run's output folder
_PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_tracker(kind: str) -> None:
    """Raise InputError naming the fix when `kind` is unknown or its package is not installed: accelerate
    itself would skip a missing tracker silently and the run would log nothing."""
    if kind not in TRACKERS:
        raise InputError(f"llm.tracking: must be one of {', '.join(TRACKERS)}, got {kind!r}")
    package = _PACKAGE.get(kind)
    if package and importlib.util.find_spec(package) is None:
        raise InputError(
            f"llm.tracking: {kind!r} needs the `{package}` package, which is not installed in this "
            f"environment: `pip install {package}`, or set llm.tracking to tensorboard (pinned in "
            "envs/requirements.lock) or none"
        )


def folder(out_dir: str | Path) -> Path:
    return Path(out_dir) / FOLDER


def accelerator_options(kind: str, out_dir: str | Path) -> dict:
    """Keyword arguments for Accelerator(...) that attach the tracker (none: no arguments)."""
    check_tracker(kind)
    if kind == "none":
        return {}
    from accelerate.utils import ProjectConfiguration

    return {
        "log_with": kind,
        "project_config": ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(folder(out_dir))),
    }


def start(
    accelerator, kind: str, out_dir: str | Path, run_name: str, config: dict | None = None, resume_step: int = 0
) -> None:
    """Open the run's tracker. A fresh run first removes what an earlier, killed attempt wrote (its curve
    would overlap this one); a run resumed from a checkpoint at `resume_step` keeps the events up to it and
    TensorBoard drops the later ones (purge_step). `config` goes to W&B and MLflow as the run's parameters
    (TensorBoard's hparams would add a folder per start; the run's config.yaml holds it)."""
    if kind == "none":
        return
    where = folder(out_dir)
    if accelerator.is_main_process:
        if not resume_step:
            shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True, exist_ok=True)
    init = {
        "tensorboard": {"purge_step": resume_step + 1} if resume_step else {},
        "wandb": {
            "dir": str(where),
            "name": f"{Path(out_dir).as_posix()}/{run_name}",
            "mode": os.environ.get("WANDB_MODE", "offline"),
        },
        "mlflow": {"logging_dir": str(where), "run_name": f"{Path(out_dir).as_posix()}/{run_name}"},
    }[kind]
    if kind == "mlflow" and accelerator.is_main_process:  # a local store in the run folder unless a server is named
        os.environ.setdefault("MLFLOW_TRACKING_URI", where.resolve().as_uri())
    accelerator.init_trackers(
        run_name, config=None if kind == "tensorboard" else _flat(config or {}), init_kwargs={kind: init}
    )


def log(accelerator, group: str, values: dict, step: int) -> None:
    """Log the numeric entries of `values` as `group/key` scalars at optimiser step `step` (main process;
    a no-op without a tracker)."""
    scalars = {
        f"{group}/{k}": float(v)
        for k, v in values.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    if scalars and accelerator.trackers:
        accelerator.log(scalars, step=step)


def finish(accelerator) -> None:
    """Close the trackers (flushes the event file). Not accelerator.end_training(): that also tears down
    the process group, which the trainer's callers still use."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> {"a.b": value} of str/int/float/bool (what W&B and MLflow take as parameters)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (str, int, float, bool)) else str(v)
    return out

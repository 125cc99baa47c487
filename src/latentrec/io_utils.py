"""Small file helpers shared by every stage: atomic writes, JSON/YAML dumps, progress bars."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Readers (and Snakemake) therefore never see a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:  # what a disk-full message needs: the output, and how far its writing got
        if not hasattr(err, "latentrec_path"):
            err.latentrec_path = str(path)
            err.latentrec_written = tmp.stat().st_size if tmp.exists() else 0
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_yaml(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_yaml(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _output_target(path: Path) -> Path:
    """The Snakemake output a file belongs to: a model folder (it holds config.json) is one output."""
    return path.parent if (path.parent / "config.json").is_file() and path.name != "config.json" else path


def read_parquet(path: str | os.PathLike, **kwargs):
    """pandas.read_parquet that names a damaged file and how to regenerate it, instead of a pyarrow trace."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    try:
        return pd.read_parquet(path, **kwargs)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        if not path.is_file():
            raise
        from latentrec.errors import DamagedFileError

        raise DamagedFileError(path, f"{type(err).__name__}: {err}", _output_target(path)) from None


def load_safetensors(path: str | os.PathLike) -> dict:
    """safetensors' load_file that names a damaged file and how to regenerate it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        if not path.is_file():
            raise
        from latentrec.errors import DamagedFileError

        raise DamagedFileError(path, f"{type(err).__name__}: {err}", _output_target(path)) from None


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


class _StatusBar(tqdm):
    """tqdm that, when its bar is not on a terminal (a Snakemake job writes stderr to logs/<rule>/...),
    also prints a one-line status to stdout every ``status_every`` seconds, which Snakemake passes to
    the console: long jobs show their progress where the user looks, not only in the log."""

    def __init__(self, *args, status_every: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._count = kwargs.get("initial", 0) or 0
        self._every = status_every
        self._t0 = self._last = time.monotonic()
        self._iterating = False

    def __iter__(self):
        self._iterating = True  # tqdm's own iteration calls update() now and then: count items here only
        try:
            for x in super().__iter__():
                yield x
                self._tick(1)
        finally:
            self._iterating = False

    def update(self, n=1):
        out = super().update(n)
        if not self._iterating:
            self._tick(n)
        return out

    def _tick(self, n) -> None:
        self._count += n
        now = time.monotonic()
        if self._every and now - self._last >= self._every:
            self._last = now
            print(self.status_line(now), flush=True)

    def status_line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self._t0
        total = self.total
        done = f"{self._count}/{total}" if total else f"{self._count}"
        left = ""
        if total and self._count:
            left = f", ~{_hms(elapsed * (total - self._count) / self._count)} left"
        unit = "" if self.unit == "it" else " " + self.unit.strip()
        return f"[latentrec] {self.desc or 'progress'}: {done}{unit} in {_hms(elapsed)}{left}"


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def process_rank() -> int:
    """This process's global rank under a distributed launcher (accelerate launch / torchrun set RANK;
    mpirun the MPI variables), 0 when run alone. Read from the environment, so it is known before any
    process group exists (argument parsing, data encoding, model loading)."""
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def is_main_process() -> bool:
    """Only the main process writes a run's outputs and logs; the others' copies would race it."""
    return process_rank() == 0


def progress(iterable=None, **kwargs):
    """A progress bar for long loops.

    On a terminal: a live tqdm bar. Otherwise (a Snakemake job, whose stderr goes to its log): the bar
    writes a line to the log every 10 s, and a one-line status goes to stdout, hence to the Snakemake
    console, every LATENTREC_STATUS_EVERY seconds (default 30; 0 turns it off).
    LATENTREC_PROGRESS=1/0 forces the bar on/off. A non-main process of a distributed run shows neither.
    """
    force = os.environ.get("LATENTREC_PROGRESS")
    disable = kwargs.pop("disable", None)
    if disable is None and not is_main_process():
        disable = True
    quiet = bool(disable)  # a non-main process: neither bar nor status
    if disable is None:
        disable = False if force == "1" else (force == "0")
    tty = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if tty else 10.0)
    kwargs.setdefault("dynamic_ncols", True)
    every = 0.0 if (tty or quiet) else float(os.environ.get("LATENTREC_STATUS_EVERY", "30"))
    return _StatusBar(iterable, disable=disable, status_every=every, **kwargs)

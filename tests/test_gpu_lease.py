import subprocess
import sys

import pytest

from latentrec.errors import InputError
from latentrec.gpu_lease import acquire


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTREC_GPU_IDS", "0,1,2")
    monkeypatch.setenv("LATENTREC_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path


def test_leases_are_disjoint_and_released(fake_gpus):
    a, ha = acquire(2)
    b, hb = acquire(1, timeout_s=0.1, poll_s=0.01)
    assert set(a).isdisjoint(b) and len(set(a) | set(b)) == 3
    with pytest.raises(TimeoutError):
        acquire(1, timeout_s=0.05, poll_s=0.01)
    for fh in ha:
        fh.close()
    c, _ = acquire(2, timeout_s=0.1, poll_s=0.01)
    assert set(c) == set(a)


def test_too_many_gpus_is_a_clear_error(fake_gpus):
    with pytest.raises(InputError, match="needs 4 GPU"):
        acquire(4)


def test_cli_sets_cuda_visible_devices(fake_gpus):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentrec",
            "lease-gpus",
            "2",
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() in {"0,1", "0,2", "1,2"}


def test_cli_steps_aside_for_slurm_and_says_so(fake_gpus, monkeypatch):
    """Under SLURM the allocation's CUDA_VISIBLE_DEVICES stands, and the job's log names it and the job."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentrec",
            "lease-gpus",
            "1",
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"
    assert "lease-gpus: CUDA_VISIBLE_DEVICES=3 set by SLURM job 42; no local lease" in out.stderr

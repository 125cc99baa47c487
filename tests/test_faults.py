"""Faults beyond a kill: a full disk during a write, an allocation that fails for memory, the OOM killer.

Each job fails with one message that names the output or the knob, leaves nothing half-written, and the
same command succeeds once the cause is gone.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from latentrec.failures import explain, oom_kill_note, out_of_memory_message
from tests.conftest import ROOT

UNSHARE = shutil.which("unshare")


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), LATENTREC_STATUS_EVERY="0")


def _in_private_tmpfs(script: str, size: str):
    """Run `script` (bash) with $DISK a private tmpfs of `size` (a user+mount namespace: no root needed)."""
    if UNSHARE is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run([UNSHARE, "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available here: {probe.stderr.decode().strip()}")
    body = f"set -u; DISK=$(mktemp -d); mount -t tmpfs -o size={size} tmpfs $DISK; cd {ROOT}\n{script}"
    return subprocess.run([UNSHARE, "-rm", "bash", "-c", body], capture_output=True, text=True, env=_env())


def test_disk_full_names_the_output_and_a_rerun_after_freeing_space_completes():
    synth = (
        f"{sys.executable} -m latentrec synthesize --n-users 400 --n-items 120 --reviews $DISK/r.json.gz "
        "--meta $DISK/meta.json.gz"
    )
    out = _in_private_tmpfs(
        textwrap.dedent(f"""
        head -c 980K /dev/urandom > $DISK/filler          # leaves ~40 KB of the 1 MB disk; r.json.gz needs ~100 KB
        {synth} > /dev/null; echo "rc=$?"
        echo "left: $(ls -A $DISK | tr '\\n' ' ')"
        rm $DISK/filler                                   # space is freed
        {synth} > /dev/null; echo "rc2=$?"
        echo "after: $(ls -A $DISK | tr '\\n' ' ')"
    """),
        size="1m",
    )
    text = out.stdout + out.stderr
    assert "rc=2" in text, text
    assert "error: the disk is full: writing /tmp/" in out.stderr and "r.json.gz failed after" in out.stderr, text
    assert "free on the file system of" in out.stderr and "rerun the same command" in out.stderr
    assert "Traceback" not in out.stderr
    assert "left: filler \n" in out.stdout, text  # no partial output, no temporary file
    assert "rc2=0" in text and "after: meta.json.gz r.json.gz" in out.stdout, text


def test_an_allocation_that_fails_for_memory_names_the_knob():
    """Under an address-space limit (what `ulimit -v`, a container or a full GPU does) the decode of a
    huge batch fails at allocation; the message names the batch knob, not a bare torch traceback."""
    script = textwrap.dedent(f"""
        import resource, sys
        import torch  # the address space torch itself needs is taken before the limit
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
        sys.argv = ["latentrec", "oom-probe"]
        from latentrec.commands import main as cli
        def oom_probe(a):  # a batch as large as a too-large decode batch makes it: 64 GB of logits
            torch.empty((64, 10, 151936, 1764), dtype=torch.float32)
        parser = cli.make_parser
        def make_parser():
            p = parser()
            sub = next(a for a in p._actions if a.dest == "command")
            sub.add_parser("decode-probe").set_defaults(func=oom_probe)
            return p
        cli.make_parser = make_parser
        cli.main(["decode-probe"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env())
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: `decode-probe` ran out of memory (an allocation failed)" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "command, knob",
    [
        ("decode", "methods.<method>.decode.batch_size"),
        ("sft", "llm.sft.micro_batch"),
        ("latent-rl", "rl.groups_per_step"),
    ],
)
def test_memory_messages_name_each_stages_knob(command, knob):
    assert knob in out_of_memory_message(command)
    assert knob in explain(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"), command, []
    )


def test_oom_killer_is_told_from_the_exit_status_and_the_cgroup_counter():
    assert oom_kill_note(1, None, None) is None
    assert "killed by the kernel's OOM killer (the cgroup's oom_kill count rose)" in oom_kill_note(137, 0, 1)
    assert "not by the OOM killer" in oom_kill_note(137, 2, 2)
    assert "most likely by the kernel's OOM killer" in oom_kill_note(137, None, None)
    assert "llm.sft.micro_batch" in oom_kill_note(137, 0, 1)


def test_a_truncated_parquet_names_the_file_and_how_to_regenerate_it(tmp_path):
    import pandas as pd

    from latentrec.errors import DamagedFileError
    from latentrec.io_utils import read_parquet

    path = tmp_path / "results" / "predictions.parquet"
    path.parent.mkdir()
    pd.DataFrame({"row": range(100), "item": range(100)}).to_parquet(path)
    assert len(read_parquet(path)) == 100
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DamagedFileError) as err:
        read_parquet(path)
    msg = str(err.value)
    assert msg.startswith(f"{path} is damaged and cannot be read (ArrowInvalid: "), msg
    assert f"`snakemake --cores all --force {path}`" in msg


def test_a_truncated_model_weight_file_names_the_model_folder_to_regenerate(tmp_path, smollm2_tokenizer):
    from latentrec.errors import DamagedFileError
    from latentrec.llm.backbone import load_backbone
    from tests.conftest import save_tiny_model

    folder = save_tiny_model(smollm2_tokenizer, tmp_path / "model")
    load_backbone(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DamagedFileError) as err:
        load_backbone(folder)
    msg = str(err.value)
    assert msg.startswith(f"{weights} is damaged and cannot be read ("), msg
    assert f"`snakemake --cores all --force {folder}`" in msg


def test_a_truncated_safetensors_file_is_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    from latentrec.errors import DamagedFileError
    from latentrec.io_utils import load_safetensors

    path = tmp_path / "latent_head.safetensors"
    save_file({"w": torch.ones(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DamagedFileError, match=r"latent_head\.safetensors is damaged and cannot be read \(Safetensor"):
        load_safetensors(path)


def test_a_job_killed_by_sigkill_is_told_in_the_log():
    """The rules' shell calls `killed-note` with the job's exit status and the cgroup's oom_kill counts."""
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "latentrec", "killed-note", *a],
        capture_output=True,  # noqa: E731
        text=True,
        env=_env(),
    )
    out = run("137", "--rule", "sft_backbone", "--oom-kills-before", "3", "--oom-kills-after", "4")
    assert out.returncode == 0
    assert out.stderr.startswith("[latentrec] sft_backbone: the job was killed by the kernel's OOM killer"), out.stderr
    assert "llm.sft.micro_batch" in out.stderr
    assert run("1", "--rule", "x").stderr == ""  # an ordinary failure keeps its own traceback, nothing added
    assert "most likely by the kernel's OOM killer" in run("137", "--oom-kills-before", "").stderr

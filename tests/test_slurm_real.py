"""The SLURM profile against a real one-node SLURM (munge + slurmctld + slurmd on this machine, fake gpu:2).

A small target of the default config (synthetic data, MostPop, and Base decoded on a tiny Llama with
decode_gpus=1) runs through `--profile profiles/slurm`; the test reads back from SLURM itself (squeue,
scontrol) that every non-local job went through sbatch and completed, with the rule's CPUs, memory,
time limit and, for the GPU job, `--gpus=1` on one node, and that the job saw CUDA_VISIBLE_DEVICES.
Skips with the reason where the slurm-wlm / munge Debian packages are absent or the daemons cannot start.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "tests" / "slurm" / "start_slurm.sh"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Environment whose SLURM_CONF points at a private one-node cluster, stopped again afterwards."""
    missing = [t for t in TOOLS if shutil.which(t) is None and shutil.which(t, path="/usr/sbin:/sbin") is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    state = tmp_path_factory.mktemp("slurm")
    try:
        proc = subprocess.run(
            [str(START), "start", str(state), str(_free_port()), str(_free_port())],
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired:
        proc = None
    try:
        if proc is None or proc.returncode != 0:
            why = "timed out" if proc is None else (proc.stderr or proc.stdout).strip()[-800:]
            pytest.skip(f"a one-node SLURM could not start on this machine: {why}")
        env = dict(
            os.environ, SLURM_CONF=str(state / "slurm.conf"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        )
        env.pop("CUDA_VISIBLE_DEVICES", None)  # only SLURM may set it in the jobs
        yield env
    finally:
        subprocess.run([str(START), "stop", str(state)], capture_output=True, timeout=60)


def _jobs(env) -> dict[str, dict]:
    """{job id: scontrol's fields} of every job the cluster still remembers (MinJobAge=600)."""
    ids = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    out = {}
    for jid in ids:
        text = subprocess.run(
            ["scontrol", "show", "job", "-o", jid], env=env, capture_output=True, text=True, check=True
        ).stdout
        out[jid] = dict(re.findall(r"(\S+?)=(\S*)", text))
    return out


def _config(tmp_path, tokenizer) -> list[str]:
    cfg = tiny_run_config(tmp_path, tokenizer)
    cfg["seeds"] = [0]
    cfg["llm"].update(decode_shards=1, decode_gpus=1)  # the one GPU rule of this target
    cfg["methods"]["Base"]["decode"].update(num_beams=2, num_return=2, max_new_tokens=24)
    cfg["evaluation"]["test_limit"] = 6
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return [f"results/Synthetic_Music/{m}/seed0/metrics.json" for m in ("MostPop", "Base")]


@pytest.mark.slow
def test_small_target_runs_through_sbatch_with_the_rules_resources(slurm_env, tmp_path, smollm2_tokenizer):
    work = tmp_path / "work"
    work.mkdir()
    targets = _config(work, smollm2_tokenizer)
    # Profile as the README says, plus what this accounting-free cluster needs: squeue for job states,
    # no account, quick first status check, and the SLURM logs kept for the asserts.
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--profile",
        str(ROOT / "profiles" / "slurm"),
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--latency-wait",
        "5",
        "--jobs",
        "4",
        *targets,
    ]
    try:
        proc = subprocess.run(cmd, cwd=work, env=slurm_env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the SLURM run took over 240 s:\n{(e.stderr or b'')[-3000:]}") from e
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    jobs = _jobs(slurm_env)
    by_rule = {}
    for jid, f in jobs.items():
        rule = re.match(r"rule_(\w+?)_wildcards", f.get("Comment", "")) or re.match(r"rule_(\w+)", f["Comment"])
        by_rule.setdefault(rule.group(1), []).append((jid, f))
    print(
        "SLURM jobs:",
        {
            r: [
                (j, f["JobState"], f.get("TresPerJob"), f["NumNodes"], f["NumCPUs"], f["MinMemoryNode"], f["TimeLimit"])
                for j, f in v
            ]
            for r, v in by_rule.items()
        },
    )
    # Every non-local job went through sbatch and completed; the local rules never reached SLURM.
    assert set(by_rule) == {
        "synthesize_dataset",
        "process_raw_dataset",
        "fit_predict_recommender",
        "fetch_model",
        "decode_llm_shard",
    }, sorted(by_rule)
    assert all(f["JobState"] == "COMPLETED" for f in jobs.values()), {j: f["JobState"] for j, f in jobs.items()}
    assert "evaluate_run" not in by_rule and "gather_llm_shards" not in by_rule
    # The rule's resources, not a profile's: 1 CPU for a 1-thread rule, its mem_mb and runtime.
    ((fit_id, fit),) = by_rule["fit_predict_recommender"]
    assert fit["NumCPUs"] == "1" and fit["TimeLimit"] == "00:10:00" and fit["MinMemoryNode"] == "2000M"
    ((proc_id, raw),) = by_rule["process_raw_dataset"]
    assert int(raw["MinMemoryNode"].rstrip("M")) < 1000  # the synthetic dump needs < 1 GB
    assert "gpu" not in raw.get("TresPerJob", "") + raw.get("TresPerNode", "")
    # The gpu=1 rule: --gpus=1 on one node, 2 CPUs (its threads), and SLURM's CUDA_VISIBLE_DEVICES in the job.
    ((dec_id, dec),) = by_rule["decode_llm_shard"]
    assert dec["TresPerJob"] == "gres:gpu:1" and dec["NumNodes"] == "1" and dec["NumCPUs"] == "2", dec
    log = (work / "logs/decode_llm_shard/Synthetic_Music/Base/seed0/1-of-1.log").read_text()
    assert re.search(rf"lease-gpus: CUDA_VISIBLE_DEVICES=[01] set by SLURM job {dec_id}; no local lease", log), log[
        :2000
    ]
    assert (work / "results/Synthetic_Music/Base/seed0/metrics.json").exists()
    assert (work / f"benchmarks/decode_llm_shard/Synthetic_Music/Base/seed0/1-of-1.tsv").exists()
    assert "Wall time per rule" in out and "| decode_llm_shard | 1 |" in out  # the onsuccess summary

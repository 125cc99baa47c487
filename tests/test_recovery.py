"""After a crash the README command alone continues, and nothing is lost (bench/chaos.py does the killing)."""

import subprocess
import sys
import time

import pytest

from latentrec.recovery import clear_stale_locks, live_snakemakes
from tests.conftest import ROOT, tiny_run_config

sys.path.insert(0, str(ROOT / "bench"))
import chaos  # noqa: E402


def _locks(workdir):
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("results/x\n")
    return locks


def test_a_dead_runs_lock_is_removed(tmp_path):
    locks = _locks(tmp_path)
    msg = clear_stale_locks(tmp_path)
    assert "removed 2 stale lock file(s)" in msg
    assert not list(locks.glob("*.lock"))
    assert clear_stale_locks(tmp_path) is None  # nothing to do


def test_a_live_runs_lock_stays(tmp_path):
    """A second run in a folder where Snakemake is running keeps the lock (and Snakemake refuses the run)."""
    locks = _locks(tmp_path)
    fake = tmp_path / "bin" / "snakemake"  # a process whose command line is `python .../snakemake`
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(fake)], cwd=tmp_path)
    try:
        for _ in range(50):
            if live_snakemakes(tmp_path):
                break
            time.sleep(0.1)
        msg = clear_stale_locks(tmp_path)
        assert f"another Snakemake is running in this folder (pid {proc.pid})" in msg
        assert len(list(locks.glob("*.lock"))) == 2
        assert not live_snakemakes(tmp_path / "bin")  # another folder is not held by it
    finally:
        proc.kill()
        proc.wait()
    assert "removed 2" in clear_stale_locks(tmp_path)


def test_running_rules_reads_started_unfinished_jobs():
    log = (
        "localrule sft_backbone:\n    input: a\n    jobid: 3\n\nrule decode_llm_shard:\n    output: b\n"
        "    jobid: 5\n\nFinished jobid: 3 (Rule: sft_backbone)\n"
    )
    assert chaos.running_rules(log) == ["decode_llm_shard"]


@pytest.mark.slow
def test_killed_runs_recover_with_the_readme_command(tmp_path, smollm2_tokenizer):
    """≥ 3 SIGKILLs of the whole process group across SFT, the latent warm-up, RL, decode shards and the
    report; after each the same command; every metrics.json, predictions.parquet and table identical."""
    cfg = tiny_run_config(tmp_path, smollm2_tokenizer)
    cfg["seeds"] = [0]
    cfg["run_methods"] = ["MostPop", "BIGRec", "BIGRec+LatentR3"]
    cfg["llm"]["decode_shards"] = 2
    cfg["llm"]["sft"].update(max_steps=1, micro_batch=4, effective_batch=4, train_limit=8, valid_limit=4)
    for m in ("BIGRec", "BIGRec+LatentR3"):
        cfg["methods"][m]["decode"].update(num_beams=2, num_return=2, max_new_tokens=24)
    cfg["llm"]["latent"]["LatentR3"]["rl"].update(group_size=2, groups_per_step=2, max_steps=1, valid_limit=4)
    cfg["evaluation"]["test_limit"] = 6
    result = chaos.chaos(cfg, tmp_path / "reference", tmp_path / "recovered", kills=3, seed=0, cores=2, first_after=6.0)
    print(chaos.summary(result))
    assert len(result.kills) == 3
    assert result.compared and not result.different and not result.missing, chaos.summary(result)
    assert any(p.endswith("predictions.parquet") for p in result.compared)
    assert any(p.startswith("results/tables/") for p in result.compared)

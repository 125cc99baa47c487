"""bench/gpu_check.sh --tiny: the prepared GPU check runs end to end on the CPU, so it cannot rot."""

import json
import math
import os
import subprocess
from pathlib import Path

from latentrec.llm.backbone import tiny_llama_like
from tests.conftest import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_writes_the_table(tmp_path, smollm2_tokenizer):
    model = save_tiny_model(smollm2_tokenizer, tmp_path / "tiny_model")
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [str(ROOT / "bench" / "gpu_check.sh"), "--tiny", "--workdir", str(work), "--model", str(model)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((work / "results" / "gpu_check" / "gpu_check.json").read_text())
    params = sum(p.numel() for p in tiny_llama_like(smollm2_tokenizer).parameters())
    assert report["params"] == params

    sft = report["training"]["SFT"]
    assert sft["steps"] == 2 and sft["tokens"] > 0 and sft["tokens_per_second"] > 0
    # MFU is 6·N·tokens/s over the peak it was measured against, nothing else.
    assert math.isclose(sft["mfu"], 6 * params * sft["tokens_per_second"] / report["peak_flops"], rel_tol=1e-9)
    assert sft["peak_memory_mb"] > 0
    assert report["training"]["LatentR3 warm-up"]["steps"] == 1
    assert report["training"]["LR-GRPO"]["steps"] == 1

    for method in ("BIGRec", "D3", "BIGRec+LatentR3"):
        d = report["decoding"][method]
        assert d["users"] == 6 and d["users_per_second"] > 0 and d["dtype"] == "torch.float32"
        # Decode MFU: the prefix-aware floor's FLOPs (summed over rows and shards) per decode second.
        log = json.loads((work / "results" / "GPUCheck_Tiny" / method / "seed0" / "train_log.json").read_text())
        per_row = [f for shard in log["shards"] for f in shard["per_row"]["floor_flops"]]
        assert len(per_row) == 6 and min(per_row) > 0
        assert math.isclose(log["decode_floor_flops"], sum(per_row), rel_tol=1e-9)
        assert math.isclose(
            d["floor_mfu"], log["decode_floor_flops"] / log["decode_seconds"] / report["peak_flops"], rel_tol=1e-9
        )
        m = report["metrics"][method]
        assert set(m) >= {"HR@5", "NDCG@5", "HR@10", "NDCG@10"}
        assert 0 <= m["NDCG@10"] <= m["HR@10"] <= 1
    tests = report["paired_t_tests"]
    assert {(t["a"], t["b"], t["metric"]) for t in tests} == {
        (a, "BIGRec", k) for a in ("D3", "BIGRec+LatentR3") for k in ("HR@10", "NDCG@10")
    }
    assert all(t["n"] == 6 and (math.isnan(t["p"]) or 0 <= t["p"] <= 1) for t in tests)
    assert report["rule_seconds"]["sft_backbone"] > 0 and report["rule_seconds"]["decode_llm_shard"] > 0

    # the real-shape part: Qwen2.5-1.5B's family at tiny widths, an SFT budget, one LR-GRPO step at K = 8 and
    # one decode batch of 64 prompts x 10 beams, each beside its fake-weight estimate
    real = report["real_shape"]
    assert real["shapes"]["group_size"] == 8 and (real["decode"]["users"], real["decode"]["beams"]) == (64, 10)
    for part in ("sft", "lr_grpo", "decode"):
        assert 0 < real[part]["mfu"] < 1 and real[part]["estimated_peak_mb"] > 0
    assert real["sft"]["tokens_per_second"] > 0 and real["decode"]["users_per_second"] > 0

    table = (work / "results" / "gpu_check" / "gpu_check.md").read_text()
    assert "| SFT (fp32) | 2 |" in table and "| BIGRec+LatentR3 | 6 |" in table and "paired t-test" in table
    assert "Real shapes: tiny Qwen2" in table and "| decode | 64 prompts x 10 beams |" in table

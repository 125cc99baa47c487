"""The memory estimates shipped beside an architecture's config.json: read before any are computed, keyed
so that a changed architecture never hits them, ignored by --estimates-file, and (for Qwen2.5-1.5B) equal
to what the estimator computes today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentrec.memory_estimate import Shapes, estimate
from latentrec.plan_memory import SHIPPED, Estimator
from tests.test_memory_estimate import tiny_qwen2

QWEN = Path(__file__).resolve().parents[1] / "config" / "models" / "Qwen2.5-1.5B"


def _arch(tmp_path: Path) -> Path:
    folder = tmp_path / "arch"
    tiny_qwen2().save_pretrained(folder)
    return folder / "config.json"


def test_shipped_estimates_are_read_and_keyed_by_the_architecture(tmp_path):
    cfg = _arch(tmp_path)
    shapes = Shapes(micro_batch=2, prompt_len=12, target_len=4, accum=1)
    computed = Estimator(cfg, cache=tmp_path / "a.json", shipped=False)
    real = computed.peak("sft", shapes)
    # a shipped file holding another number for the same key is what a new estimator returns, uncomputed
    (cfg.parent / SHIPPED).write_text(json.dumps({k: 7.0 for k in computed.cache}))
    assert Estimator(cfg, cache=tmp_path / "b.json").peak("sft", shapes) == 7.0
    # ... unless told to estimate afresh (make estimates)
    assert Estimator(cfg, cache=tmp_path / "c.json", shipped=False).peak("sft", shapes) == real
    # a local cache entry wins over the shipped one
    assert Estimator(cfg, cache=tmp_path / "a.json").peak("sft", shapes) == real
    # another architecture (a wider MLP) never hits the shipped keys
    data = json.loads(cfg.read_text())
    data["intermediate_size"] *= 2
    cfg.write_text(json.dumps(data))
    other = Estimator(cfg, cache=tmp_path / "d.json").peak("sft", shapes)
    assert other != 7.0 and other > real


@pytest.mark.slow
def test_shipped_qwen_estimates_are_what_the_estimator_gives_today():
    """The cheapest shipped training entry, recomputed: a change to the step code or the accounting that
    moves the peaks makes this fail until `make estimates` rewrites the file."""
    shipped = json.loads((QWEN / SHIPPED).read_text())
    est = Estimator(QWEN / "config.json", cache=None, shipped=False)
    ours = [(json.loads(k), v) for k, v in shipped.items() if json.loads(k)[0] == est.arch]
    assert len(ours) == len(shipped) >= 5, "every shipped key names this config.json's hash"
    kinds = {k[1] for k, _ in ours}
    assert {"sft", "latent_sft", "lr_grpo", "decode"} <= kinds
    (_, kind, shape), peak = min(
        ((k, v) for k, v in ours if k[1] == "sft"), key=lambda kv: kv[0][2]["micro_batch"] * kv[0][2]["prompt_len"]
    )
    shape["head_options"] = tuple(tuple(o) for o in shape["head_options"])
    assert estimate(kind, est.cfg, Shapes(**shape)).peak_bytes == peak

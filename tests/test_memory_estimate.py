"""The fake-weight memory estimate against a measured CPU peak on a tiny model, and at Qwen2.5-1.5B's shapes."""

import json
import resource
from pathlib import Path
from types import SimpleNamespace

import pytest

from latentrec.flops import Backbone
from latentrec.memory_estimate import STEP_KINDS, Shapes, analytic_flops, estimate, model_config

# Training kinds: the estimate is the same live bytes as the real run's allocations to 0.5 %. Decoding:
# CPU attention allocates workspaces inside its kernel, which no tensor shows: at least 75 %.
BOUNDS = {
    "sft": (0.995, 1.005),
    "latent_sft": (0.995, 1.005),
    "lr_grpo": (0.995, 1.005),
    "flr_grpo": (0.995, 1.005),
    "decode": (0.75, 1.005),
}


def tiny_qwen2():
    from transformers import Qwen2Config

    cfg = Qwen2Config(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        use_sliding_window=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def tiny_shapes(kind: str) -> Shapes:
    flr = kind == "flr_grpo"
    return Shapes(
        micro_batch=4,
        prompt_len=40,
        target_len=8,
        group_size=4,
        catalog_items=50,
        decode_batch=4,
        num_beams=4,
        max_new_tokens=6,
        head="flr" if flr else "latentratt",
        head_options=(("n_factors", 3),) if flr else (),
        refine_steps=2 if flr else 1,
    )


def profiled_peak(run) -> int:
    """The high-water mark of CPU bytes allocated while `run()` runs, from torch.profiler's memory events."""
    import tempfile
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0), key=lambda e: e["ts"]
    )
    now = peak = 0
    for e in memory:
        now += e["args"]["Bytes"]
        peak = max(peak, now)
    return peak


# Each kind's real step and its fake-weight estimate run in a fresh interpreter, so that neither sees what
# earlier tests of the session allocated or cached.
_MEASURE = (
    "import json, sys, torch\n"
    "from latentrec.memory_estimate import estimate, measure_step\n"
    "from tests.test_memory_estimate import profiled_peak, tiny_qwen2, tiny_shapes\n"
    "import latentrec.llm.latent as latent\n"
    "kind = sys.argv[1]\n"
    "if len(sys.argv) > 2: latent.LOGPROB_PIECE_TOKENS = int(sys.argv[2])\n"
    "torch.manual_seed(0)\n"
    "measured = profiled_peak(lambda: measure_step(kind, tiny_qwen2(), tiny_shapes(kind), real=True))\n"
    "e = estimate(kind, tiny_qwen2(), tiny_shapes(kind), overhead_bytes=0)\n"
    "print(json.dumps({'measured': measured, 'live_peak_bytes': e.live_peak_bytes, 'params_bytes': e.params_bytes,\n"
    "                  'grads_bytes': e.grads_bytes, 'optimizer_bytes': e.optimizer_bytes,\n"
    "                  'flops_counted': e.flops_counted}))\n"
)


def measured_and_estimated(kind: str, piece: int | None = None) -> dict:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=f"{root / 'src'}:{root}")
    args = [sys.executable, "-c", _MEASURE, kind, *([str(piece)] if piece else [])]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind,piece", [(k, None) for k in STEP_KINDS] + [("lr_grpo", 16)])
def test_fake_estimate_matches_measured_cpu_peak(kind, piece):
    """``piece``: the RL target log-probs in pieces of 16 tokens (8 of them), recomputed in the backward."""
    r = measured_and_estimated(kind, piece)
    measured = r["measured"]
    est = SimpleNamespace(**r)
    # In pieces the estimate runs above the measured peak (6 % here): on the safe side, so the bound is looser.
    low, high = BOUNDS[kind] if piece is None else (0.995, 1.10)
    assert low * measured <= est.live_peak_bytes <= high * measured, (kind, measured, est.live_peak_bytes)
    if kind in ("sft", "latent_sft"):  # full fine-tuning: fp32 grads like the weights, two fp32 AdamW states
        assert 0.99 * est.params_bytes <= est.grads_bytes <= est.params_bytes  # the params count the buffers too
        assert est.optimizer_bytes >= 2 * est.grads_bytes
    assert est.flops_counted > 0


def test_qwen2_5_1_5b_estimate_runs_without_real_memory():
    """The shipped config is Qwen2.5-1.5B's; its SFT step is estimated without allocating its weights."""
    cfg = model_config("Qwen2.5-1.5B")
    bb = Backbone.from_config(cfg)
    n = bb.params
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, bb.head) == (1536, 28, 151936, 151936 * 1536)
    assert bb.body == n - bb.head  # tied: the embedding table is the LM head
    assert abs(n - 1.544e9) / 1.544e9 < 0.002
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shapes = Shapes(micro_batch=2, prompt_len=64, target_len=8, accum=1)
    est = estimate("sft", cfg, shapes)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mb < 500
    assert 4 * n <= est.params_bytes < 4 * n + (1 << 20)  # fp32 master weights (and the rotary buffers)
    assert est.optimizer_bytes >= 8 * n
    assert est.peak_bytes > 16 * n
    # the counted FLOPs follow the plan's count (the LM head on target tokens only) to 3 %
    assert est.flops_analytic == analytic_flops("sft", cfg, shapes)
    assert abs(est.flops_ratio - 1) < 0.03

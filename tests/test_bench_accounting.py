"""What the throughput figures count: SFT's train_log.json tokens/s is the training loop alone, and
bench/sft_throughput.py's model FLOPs (for MFU) equal a count of what the model actually multiplies."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import pytest
import torch

from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.sft import SFTTask, collate, train_sft
from tests.test_llm_sft import _toy_samples, tiny_sft_config

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_sft_tokens_per_second_leaves_out_validation_and_checkpoints(smollm2_tokenizer, tmp_path, monkeypatch):
    import latentrec.llm.sft as sft

    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 16), _toy_samples(tok, 4)
    slow = 0.4
    real_eval, real_save = sft.evaluate_loss, sft.save_checkpoint
    calls = {"eval": 0, "save": 0}

    def slowed(name, fn):  # made visibly slow: neither may count as training time
        def run(*a, **kw):
            calls[name] += 1
            time.sleep(slow)
            return fn(*a, **kw)

        return run

    monkeypatch.setattr(sft, "evaluate_loss", slowed("eval", real_eval))
    monkeypatch.setattr(sft, "save_checkpoint", slowed("save", real_save))
    cfg = tiny_sft_config(micro_batch=4, max_epochs=2, patience=5)
    log = train_sft(tiny_llama_like(tok), tok, train, valid, cfg, tmp_path / "run")
    assert log["epochs"] == 2 and log["steps"] == 4 and calls["eval"] == 2 and calls["save"] >= 4
    assert log["seconds"] - log["train_seconds"] >= (calls["eval"] + calls["save"]) * slow
    # Real (non-padding) tokens of every sample of both epochs, per second of the training loop.
    assert log["tokens"] == 2 * sum(len(s.input_ids) for s in train)
    assert log["tokens_per_second"] == pytest.approx(log["tokens"] / log["train_seconds"])


def test_training_flops_equal_a_count_of_the_multiplies(smollm2_tokenizer):
    """Reference: forward hooks add 2 x in x out per row of every Linear the model runs (the LM head runs
    on target positions only), plus 4 x t x d per layer at position t for causal QK^T and AV; x3 for
    forward + backward."""
    bench = _bench("sft_throughput")
    tok = smollm2_tokenizer
    model = tiny_llama_like(tok)
    samples = _toy_samples(tok, 3)
    counted = [0]

    def hook(module, inputs, output):
        counted[0] += 2 * inputs[0].numel() // module.in_features * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    n_targets = 0
    with torch.no_grad():
        for s in samples:  # one unpadded sequence at a time: no padding in the count
            _, n = SFTTask().loss_sum(model, collate([s], tok.pad_token_id))
            n_targets += n
    for h in handles:
        h.remove()
    d, layers = model.config.hidden_size, model.config.num_hidden_layers
    attention = sum(4 * t * d for s in samples for t in range(1, len(s.input_ids) + 1)) * layers
    want = 3 * (counted[0] + attention)
    assert bench.training_flops(model, [len(s.input_ids) for s in samples], n_targets) == pytest.approx(want, rel=1e-12)
    # The head really ran on target positions only (what SFTTask promises and the formula assumes).
    assert n_targets == sum(len(s.input_ids) - s.prompt_len for s in samples)


def test_matmul_peak_and_load_average_fields():
    setup = _bench("_setup")
    peak = setup.matmul_peak(torch.get_num_threads(), n=128, repeats=3)
    assert 0 < peak["mean_flops_per_s"] <= peak["best_flops_per_s"] and peak["flops_per_cpu_s"] > 0
    fields = setup.LoadAverage().fields()
    assert set(fields) == {"load_average_start", "load_average_end", "cpu_count"}
    assert len(fields["load_average_start"]) == len(fields["load_average_end"]) == 3

"""Padding-free packed SFT: the same loss, gradients and training as padded micro-batches."""

import copy
import os
from pathlib import Path

import pytest
import torch

from latentrec.errors import InputError
from latentrec.llm.backbone import tiny_llama_like, tiny_qwen2_like
from latentrec.llm.prompts import IGNORE_INDEX, SegmentEncoder, encode_sample
from latentrec.llm.sft import SFTConfig, SFTTask, collate, collate_packed, train_sft
from tests.test_llm_sft import tiny_sft_config

TITLES = [
    "Abbey Road",
    "Kind of Blue",
    "The Dark Side of the Moon",
    "Blue",
    "Rumours",
    "Songs in the Key of Life",
    "Thriller",
    "Nevermind",
    "Pet Sounds",
    "Led Zeppelin IV",
]


def varied_samples(tok, n=6):
    """Real SmolLM2 prompts with 1 to n histories: lengths differ by whole titles."""
    enc = SegmentEncoder(tok)
    return [
        encode_sample(enc, TITLES[: 1 + i % len(TITLES)], TITLES[(3 * i + 5) % len(TITLES)], "musics") for i in range(n)
    ]


def build(kind, tok, attn, dtype=torch.float32):
    make = tiny_llama_like if kind == "llama" else tiny_qwen2_like
    model = make(tok).to(dtype)
    model.config._attn_implementation = attn
    return model


def loss_and_grads(model, batch):
    """The trainer's per-token loss (summed CE / target tokens) and its gradients."""
    model.zero_grad(set_to_none=True)
    loss, n = SFTTask().loss_sum(model, batch)
    (loss / n).backward()
    return (loss / n).detach(), n, {k: p.grad.clone() for k, p in model.named_parameters()}


def test_packed_row_layout(smollm2_tokenizer):
    samples = varied_samples(smollm2_tokenizer, 3)
    batch = collate_packed(samples)
    lengths = [len(s.input_ids) for s in samples]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [t for L in lengths for t in range(L)]
    starts = [sum(lengths[:i]) for i in range(3)]
    assert all(batch["labels"][0, s] == IGNORE_INDEX for s in starts)
    assert batch["input_ids"][0].tolist() == [t for s in samples for t in s.input_ids]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind,attn", [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa")])
def test_packed_loss_and_gradients_equal_the_padded(smollm2_tokenizer, kind, attn, dtype):
    """Tiny model, real prompts of varied lengths: one packed row against the right-padded batch, to 1e-6
    (the two differ by rounding only: ~4e-8 in fp32, ~1e-17 in fp64)."""
    tok = smollm2_tokenizer
    model = build(kind, tok, attn, dtype)
    samples = varied_samples(tok, 6)
    assert len({len(s.input_ids) for s in samples}) >= 4  # varied lengths: the padded batch has padding
    padded = collate(samples, tok.pad_token_id)
    assert int(padded["attention_mask"].sum()) < padded["input_ids"].numel()
    lp, n_p, gp = loss_and_grads(model, padded)
    lk, n_k, gk = loss_and_grads(model, collate_packed(samples))
    assert n_p == n_k > 0
    loss_diff = abs(lp - lk).item()
    grad_diff = max((gp[k] - gk[k]).abs().max().item() for k in gp)
    if os.environ.get("LATENTREC_PRINT_DIFFS"):
        print(
            f"\n{kind}/{attn}/{dtype}: loss {lp.item():.6f}, |loss diff| {loss_diff:.2e}, max |grad diff| "
            f"{grad_diff:.2e} (max |grad| {max(g.abs().max().item() for g in gp.values()):.2f})"
        )
    assert loss_diff < 1e-6 and grad_diff < 1e-6, (loss_diff, grad_diff)


def test_packed_rows_do_not_attend_across_samples(smollm2_tokenizer):
    """Changing the first sample leaves the second's loss unchanged in the packed row."""
    tok = smollm2_tokenizer
    model = build("llama", tok, "sdpa", torch.float64)
    a, b, c = varied_samples(tok, 3)
    with torch.no_grad():
        alone, _ = SFTTask().loss_sum(model, collate_packed([b]))
        first_a, _ = SFTTask().loss_sum(model, collate_packed([a, b]))
        first_c, _ = SFTTask().loss_sum(model, collate_packed([c, b]))
        only_a, _ = SFTTask().loss_sum(model, collate_packed([a]))
        only_c, _ = SFTTask().loss_sum(model, collate_packed([c]))
    assert (first_a - only_a).item() == pytest.approx(alone.item(), abs=1e-9)
    assert (first_c - only_c).item() == pytest.approx(alone.item(), abs=1e-9)


def test_packed_training_gives_the_padded_model(smollm2_tokenizer, tmp_path):
    """A few optimiser steps (fp32, accumulation over micro-batches, clipping, AdamW): the same weights."""
    tok = smollm2_tokenizer
    train, valid = varied_samples(tok, 24), varied_samples(tok, 6)
    logs, weights = {}, {}
    for packing in (False, True):
        model = tiny_llama_like(tok)
        cfg = tiny_sft_config(micro_batch=4, max_steps=3, checkpoint_every=0, packing=packing)
        logs[packing] = train_sft(model, tok, train, valid, cfg, tmp_path / str(packing))
        weights[packing] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert logs[True]["steps"] == logs[False]["steps"] == 3
    assert logs[True]["best_valid_loss"] == pytest.approx(logs[False]["best_valid_loss"], rel=1e-5)
    worst = max((weights[True][k] - weights[False][k]).abs().max().item() for k in weights[True])
    moved = max((weights[True][k] - tiny_llama_like(tok).state_dict()[k]).abs().max().item() for k in weights[True])
    if os.environ.get("LATENTREC_PRINT_DIFFS"):
        print(f"\n3 steps: weights moved up to {moved:.2e}, packed - padded at most {worst:.2e}")
    assert moved > 1e-4 and worst < 1e-5, (moved, worst)
    # The token savings: the packed run computed the real tokens only, the padded one real + padding.
    assert logs[True]["tokens"] == logs[False]["tokens"]  # both count real tokens


def test_packing_counts_real_tokens_only(smollm2_tokenizer):
    tok = smollm2_tokenizer
    samples = varied_samples(tok, 8)
    padded, packed = collate(samples, tok.pad_token_id), collate_packed(samples)
    real = sum(len(s.input_ids) for s in samples)
    assert SFTTask().count_tokens(padded) == SFTTask(packing=True).count_tokens(packed) == real
    assert packed["input_ids"].numel() == real < padded["input_ids"].numel()


def test_latent_warmup_refuses_packing(smollm2_tokenizer, tmp_path):
    from latentrec.llm.latent import LatentSFTTask, new_reasoner

    tok = copy.deepcopy(smollm2_tokenizer)
    model = new_reasoner(tiny_llama_like(tok), tok)
    with pytest.raises(InputError, match="packing: false"):
        train_sft(model, tok, [], [], SFTConfig(packing=True), tmp_path, task=LatentSFTTask())


def test_config_check_refuses_packing_in_a_latent_recipe():
    """llm.sft.packing is inherited by the latent warm-ups: refused there before any job, until a recipe says
    `packing: false`."""
    import yaml

    from latentrec.config_checks import validate_config, validate_schema

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    cfg["llm"]["sft"]["packing"] = True
    assert cfg["llm"].get("latent"), "config.yaml has latent recipes"
    validate_schema(cfg, root / "workflow" / "schemas" / "config.schema.yaml")
    with pytest.raises(InputError, match=r"sft\.packing: the latent warm-up"):
        validate_config(cfg)
    for recipe in cfg["llm"]["latent"].values():
        recipe.setdefault("sft", {})["packing"] = False
    validate_config(cfg)


def test_validation_in_length_order_is_the_split_order_loss(smollm2_tokenizer):
    """evaluate_loss batches the validation rows by length (little padding): the same mean loss, to rounding,
    as batches in split order, packed or not."""
    from types import SimpleNamespace

    from latentrec.llm.sft import evaluate_loss

    tok = smollm2_tokenizer
    model = tiny_llama_like(tok)
    samples = varied_samples(tok, 20)
    one = SimpleNamespace(
        process_index=0,
        num_processes=1,
        device=torch.device("cpu"),  # one process, fp32
        autocast=lambda: torch.autocast("cpu", enabled=False),
        reduce=lambda t, reduction: t,
    )
    cfg = SFTConfig(micro_batch=3)
    got = evaluate_loss(model, samples, cfg, tok.pad_token_id, one, SFTTask())
    packed = evaluate_loss(model, samples, cfg, tok.pad_token_id, one, SFTTask(packing=True))
    with torch.no_grad():
        total = sum(
            SFTTask().loss_sum(model, collate(samples[i : i + 6], tok.pad_token_id))[0].item() for i in range(0, 20, 6)
        )
    n = sum(sum(x != IGNORE_INDEX for x in s.labels) for s in samples)
    assert got == pytest.approx(total / n, rel=1e-6) and packed == pytest.approx(got, rel=1e-6)


def test_packed_loss_under_bf16_autocast(smollm2_tokenizer):
    """The GPU recipe's number format (bf16 autocast, fp32 weights): the packed loss and gradients stay within
    bf16 rounding of the padded ones (different row shapes round differently)."""
    tok = smollm2_tokenizer
    model = build("qwen2", tok, "sdpa")
    samples = varied_samples(tok, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _, gp = loss_and_grads(model, collate(samples, tok.pad_token_id))
        lk, _, gk = loss_and_grads(model, collate_packed(samples))
    assert lk.dtype == torch.float32 and abs(lp - lk).item() < 1e-4 * abs(lp).item()  # measured 2e-7 relative
    scale = max(g.abs().max().item() for g in gp.values())
    assert max((gp[k] - gk[k]).abs().max().item() for k in gp) < 0.01 * scale  # measured 0.2 %

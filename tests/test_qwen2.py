"""The paper's model family on CPU: a tiny random Qwen2 (GQA, q/k/v bias, tied embeddings, an embedding
matrix padded past the tokenizer as Qwen2.5's is) through SFT, `<|Thought|>` insertion, the LatentR3
warm-up, one LR-GRPO step, catalog decoding and CoT's free greedy reasoning.

The tokenizer is Qwen2's class (byte-level BPE with Qwen2's pre-tokeniser, `<|endoftext|>` as EOS and pad,
no BOS) built offline from SmolLM2's vocabulary and merges, plus a few Qwen2.5-style special tokens.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch

from latentrec.llm.backbone import tiny_llama_like, tiny_qwen2_like
from latentrec.llm.cot import greedy_reasoning
from latentrec.llm.grpo import LRGRPOConfig, train_lr_grpo
from latentrec.llm.latent import LatentReasoner, LatentSFTTask, new_reasoner
from latentrec.llm.prompts import THOUGHT_TOKEN, SegmentEncoder
from latentrec.llm.recommender import decode_rows
from latentrec.llm.sft import train_sft
from tests.latent_toys import TITLES, catalog_dataset, toy_samples
from tests.test_bf16 import bf16_sft_config

QWEN_SPECIALS = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|vision_pad|>", "<|fim_prefix|>"]


@pytest.fixture(scope="module")
def qwen2_tokenizer(smollm2_tokenizer):
    from transformers import Qwen2Tokenizer

    spec = json.loads(smollm2_tokenizer.backend_tokenizer.to_str())["model"]
    tok = Qwen2Tokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]])
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    assert tok.bos_token_id is None and tok.eos_token == tok.pad_token == "<|endoftext|>"
    return tok


@pytest.fixture
def tok(qwen2_tokenizer):
    return copy.deepcopy(qwen2_tokenizer)  # new_reasoner adds <|Thought|>


def _tied(llm):
    return llm.get_output_embeddings().weight.data_ptr() == llm.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("family", ["qwen2-padded", "llama-exact"])
def test_thought_token_gets_the_next_id_and_its_own_row_without_moving_any_other(tok, smollm2_tokenizer, family):
    if family == "llama-exact":
        tok = copy.deepcopy(smollm2_tokenizer)
        llm = tiny_llama_like(tok)
    else:
        llm = tiny_qwen2_like(tok)
        assert _tied(llm) and llm.config.vocab_size % 128 == 0
    n, rows = len(tok), llm.get_input_embeddings().num_embeddings
    assert rows >= n + 256 if family == "qwen2-padded" else rows == n
    ids_before, weight_before = tok.get_vocab(), llm.get_input_embeddings().weight.detach().clone()

    r = new_reasoner(llm, tok)
    tid = tok.convert_tokens_to_ids(THOUGHT_TOKEN)
    w = r.llm.get_input_embeddings().weight.detach()
    assert tid == n and len(tok) == n + 1
    assert {t: i for t, i in tok.get_vocab().items() if t != THOUGHT_TOKEN} == ids_before
    # A padded matrix keeps its size (resize_token_embeddings(len(tok)) would have shrunk it); an exact one
    # grows by the one row.
    assert w.shape[0] == r.llm.config.vocab_size == max(rows, n + 1)
    assert torch.equal(w[:n], weight_before[:n])
    assert torch.equal(w[n + 1 :], weight_before[n + 1 :])  # padded rows (none for Llama) untouched
    assert torch.allclose(w[tid], weight_before[:n].mean(0), atol=1e-4)
    assert _tied(r.llm)
    assert tok.decode([tid]) == THOUGHT_TOKEN and tok.encode(THOUGHT_TOKEN, add_special_tokens=False) == [tid]


def _attract_padded_rows(llm, n_tokens):
    """Make every row past the tokenizer win any unconstrained argmax (Qwen2.5's padded rows are untrained:
    nothing keeps their logits low), so a path that forgets the constraint shows."""
    with torch.no_grad():
        w = llm.get_input_embeddings().weight
        w[n_tokens:] = torch.randn(w.shape[0] - n_tokens, w.shape[1], generator=torch.Generator().manual_seed(0)) * 20


def test_sft_latentr3_decoding_and_cot_on_a_padded_qwen2(tok, tmp_path):
    samples = toy_samples(tok, 8)
    llm = tiny_qwen2_like(tok)
    rows = llm.get_input_embeddings().num_embeddings
    cfg = bf16_sft_config()
    before = llm.model.layers[0].self_attn.q_proj.bias.detach().clone()
    log = train_sft(llm, tok, samples, samples[:4], cfg, tmp_path / "sft")
    assert math.isfinite(log["best_valid_loss"]) and not torch.equal(before, llm.model.layers[0].self_attn.q_proj.bias)

    # LatentR3 on it: <|Thought|>, warm-up (one step), one LR-GRPO step, save, load.
    r = new_reasoner(llm, tok)
    n = len(tok)
    assert r.llm.get_input_embeddings().num_embeddings == rows and n == tok.convert_tokens_to_ids(THOUGHT_TOKEN) + 1
    lsamples = toy_samples(tok, 8)
    log = train_sft(r, tok, lsamples, lsamples[:4], cfg, tmp_path / "warm", task=LatentSFTTask())
    assert math.isfinite(log["best_valid_loss"])
    head_before = {k: v.detach().clone() for k, v in r.head.state_dict().items()}
    rl = LRGRPOConfig(lr=1e-2, group_size=4, groups_per_step=4, warmup_steps=0, max_steps=1, mixed_precision="bf16")
    log = train_lr_grpo(r, tok, lsamples, lsamples[:4], rl)
    assert math.isfinite(log["valid_neg_ppl"]) and all(math.isfinite(v) for v in log["history"][0].values())
    assert any(not torch.equal(v, head_before[k]) for k, v in r.head.state_dict().items())
    r.save(tmp_path / "rl", tok)
    loaded, tok2 = LatentReasoner.load(tmp_path / "rl", dtype=torch.bfloat16)  # the GPU decode dtype
    assert len(tok2) == n and loaded.llm.get_input_embeddings().num_embeddings == rows and _tied(loaded.llm)

    # Decoding: catalog titles only, even when the padded rows would win every unconstrained argmax.
    _attract_padded_rows(loaded.llm, n)
    enc = SegmentEncoder(tok2)
    prompt = enc.prompt_ids(TITLES[:2], "musics")
    with torch.no_grad():
        logits = loaded.llm(input_ids=torch.tensor([prompt])).logits[0, -1]
    assert int(logits.argmax()) >= n  # the trap is armed
    ds = catalog_dataset(TITLES, [[i % 6, (i + 1) % 6] for i in range(6)], [(i + 3) % 6 for i in range(6)])
    out = decode_rows(loaded, tok2, ds, np.arange(6), "musics", {"num_beams": 4, "num_return": 4, "batch_size": 3})
    assert all(len(x) == 4 and all(0 <= i < len(TITLES) for i in x) for x in out["pred_item_ids"])
    assert all(np.isfinite(list(s)).all() for s in out["pred_scores"])

    # CoT's reasoning is generated without a catalog constraint: it must still stay within the tokenizer.
    plain = loaded.llm
    thoughts = greedy_reasoning(plain, tok2, [prompt, prompt[3:]], max_new_tokens=6)
    assert all(len(t) == 6 for t in thoughts), thoughts  # the padded rows never won, EOS never came
    assert all(0 <= t < n for row in thoughts for t in row), thoughts


# ------------------------------------------------------------------------------------ fetching by hand
def test_hub_id_offline_names_the_folder_to_place_and_the_config_key(tmp_path):
    """`fetch-model` as the fetch_model rule runs it, with HF_HUB_OFFLINE=1 and an empty hub cache (no
    network is touched): the error says what to download where, the layout, and the key to set."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "resources" / "models" / "Qwen2.5-1.5B"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "latentrec", "fetch-model", "--spec", "Qwen/Qwen2.5-1.5B", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    err = run.stderr
    for needle in (
        "HF_HUB_OFFLINE is set",
        "hf download Qwen/Qwen2.5-1.5B --local-dir Qwen2.5-1.5B",
        "resources/hub/Qwen2.5-1.5B/",
        "llm.models.Qwen2.5-1.5B.spec: resources/hub/Qwen2.5-1.5B",
        "config.json",
        "tokenizer.json",
        "*.safetensors",
        "model.safetensors.index.json",
        "Model weights without network",
    ):
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    assert not out.exists() and not (out.parent / f".{out.name}.tmp").exists()  # nothing half-made is left


def test_a_qwen2_folder_placed_by_hand_is_fetched_and_loads(qwen2_tokenizer, tmp_path):
    from latentrec.errors import InputError
    from latentrec.llm.backbone import fetch_model, load_backbone

    placed = tmp_path / "resources" / "hub" / "Qwen2.5-1.5B"
    llm = tiny_qwen2_like(qwen2_tokenizer)
    llm.save_pretrained(placed)
    qwen2_tokenizer.save_pretrained(placed)
    out = tmp_path / "resources" / "models" / "Qwen2.5-1.5B"
    fetch_model(str(placed), out)
    model, tok = load_backbone(out)
    assert type(model).__name__ == "Qwen2ForCausalLM" and _tied(model)
    assert len(tok) == len(qwen2_tokenizer) and model.config.vocab_size == llm.config.vocab_size > len(tok)
    assert torch.equal(model.get_input_embeddings().weight, llm.get_input_embeddings().weight)

    for f in placed.glob("*.safetensors"):  # a copy that lost its weights names what is missing, and the key
        f.unlink()
    with pytest.raises(InputError, match=r"llm\.models\.Qwen2\.5-1\.5B\.spec\) lacks \*\.safetensors weights"):
        fetch_model(str(placed), out)
    with pytest.raises(InputError, match="does not exist"):
        fetch_model("resources/hub/not-there", out)
    with pytest.raises(
        InputError,
        match=r"model spec /etc/passwd \(config key llm\.models\.Qwen2\.5-1\.5B\.spec\) "
        r"is a file, not a folder",
    ):
        fetch_model("/etc/passwd", out)

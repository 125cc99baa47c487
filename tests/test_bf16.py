"""bf16 mixed precision on CPU, so a dtype error shows here and not on a cluster.

The GPU recipe (config/paper.yaml) trains with accelerate ``mixed_precision="bf16"``: fp32 master weights,
matmuls in bf16 under autocast; and decodes a model loaded with ``dtype=torch.bfloat16``. accelerate runs
the same autocast on CPU (``torch.autocast("cpu", torch.bfloat16)``), so these tests go through the very
code the GPU runs: one step of SFT, the LatentR3 warm-up, LR-GRPO and FLR-GRPO, and decodes. They check
that autocast is really on (bf16 matmul outputs), that weights stay fp32 and move, that every softmax,
log-softmax and cross-entropy sees >= fp32 inputs (precision.py's promise), and that the latent enters
the embedding space in the embedding's dtype.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.grpo import LRGRPOConfig, train_lr_grpo
from latentrec.llm.latent import LatentSFTTask, collate_prompt_target
from latentrec.llm.prompts import SegmentEncoder
from latentrec.llm.recommender import decode_rows
from latentrec.llm.sft import SFTConfig, train_sft
from tests.latent_toys import TITLES, catalog_dataset, tiny_reasoner, toy_samples

WIDE = (torch.float32, torch.float64)


@pytest.fixture
def tok(smollm2_tokenizer):
    return copy.deepcopy(smollm2_tokenizer)  # new_reasoner adds <|Thought|>


class DtypeSpy:
    """Records the input dtype of every softmax-like call, the output dtype of the LLM's matmuls and the
    dtype of every input embedding the backbone receives."""

    def __init__(self, monkeypatch, llm):
        self.normalised, self.matmul, self.embeds = [], [], []
        for name in ("log_softmax", "softmax", "cross_entropy"):
            fn = getattr(F, name)
            monkeypatch.setattr(F, name, self._wrap(fn, name))
        for name in ("softmax", "log_softmax"):
            fn = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(fn, name))
        monkeypatch.setattr(torch, "logsumexp", self._wrap(torch.logsumexp, "logsumexp"))
        self.hooks = [
            llm.model.layers[0].mlp.up_proj.register_forward_hook(lambda m, i, o: self.matmul.append(o.dtype)),
            llm.model.register_forward_pre_hook(self._embeds, with_kwargs=True),
        ]

    def _wrap(self, fn, name):
        def spy(x, *a, **k):
            self.normalised.append((name, x.dtype))
            return fn(x, *a, **k)

        return spy

    def _embeds(self, module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            self.embeds.append(kwargs["inputs_embeds"].dtype)

    def close(self):
        for h in self.hooks:
            h.remove()

    def check(self, embeds_dtype=None):
        assert torch.bfloat16 in self.matmul, "autocast was not on: no bf16 matmul output"
        assert self.normalised, "no softmax/log-softmax/cross-entropy call was seen"
        narrow = [(n, d) for n, d in self.normalised if d not in WIDE]
        assert not narrow, f"normalised in a narrow dtype: {narrow[:5]}"
        if embeds_dtype is not None:
            assert self.embeds and set(self.embeds) == {embeds_dtype}, self.embeds


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _assert_fp32_and(module, before, moved: bool):
    for n, p in module.named_parameters():
        assert p.dtype == torch.float32, f"{n} is {p.dtype}: master weights must stay fp32"
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    if moved:
        assert changed == set(before), f"not updated: {sorted(set(before) - changed)[:5]}"
    else:
        assert not changed, f"updated but should be frozen: {sorted(changed)[:5]}"


def bf16_sft_config(**kw):
    """One bf16 optimiser step over 4 rows; `kw` replaces any field."""
    return SFTConfig(
        **{
            **dict(
                lr=1e-3,
                warmup_steps=0,
                effective_batch=4,
                micro_batch=4,
                max_epochs=1,
                max_steps=1,
                checkpoint_every=0,
                mixed_precision="bf16",
                valid_limit=4,
            ),
            **kw,
        }
    )


# ------------------------------------------------------------------------------------------- training
def test_sft_step_under_bf16_autocast_keeps_fp32_master_weights(tok, tmp_path, monkeypatch):
    from safetensors import safe_open

    llm = tiny_llama_like(tok)
    before = _snapshot(llm)
    spy = DtypeSpy(monkeypatch, llm)
    samples = toy_samples(tok, 8)
    log = train_sft(llm, tok, samples, samples[:4], bf16_sft_config(), tmp_path)
    spy.close()
    assert log["mixed_precision"] == "bf16" and log["steps"] == 1
    assert math.isfinite(log["best_valid_loss"]) and not log["diverged"]
    spy.check()
    assert ("cross_entropy", torch.float32) in spy.normalised
    _assert_fp32_and(llm, before, moved=True)
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:  # saved as trained: fp32
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


@pytest.mark.parametrize("head,options", [("latentratt", {}), ("flr", {"n_factors": 3})])
def test_latent_warmup_step_under_bf16_autocast(tok, tmp_path, monkeypatch, head, options):
    r = tiny_reasoner(tok, head=head, n_latents=2, refine_steps=2 if head == "flr" else 1, **options)
    before = _snapshot(r)
    spy = DtypeSpy(monkeypatch, r.llm)
    samples = toy_samples(tok, 8)
    log = train_sft(r, tok, samples, samples[:4], bf16_sft_config(), tmp_path, task=LatentSFTTask())
    spy.close()
    assert log["mixed_precision"] == "bf16" and math.isfinite(log["best_valid_loss"])
    # fp32 master weights: the latent is written into the (fp32) embedding space as fp32, like the token
    # embeddings around it, even though the matmuls that made it ran in bf16.
    spy.check(embeds_dtype=torch.float32)
    _assert_fp32_and(r, before, moved=True)
    batch = collate_prompt_target(samples[:3], tok.pad_token_id)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        latents, _ = r.think(r.encode_prompt(batch["prompt_ids"], batch["prompt_mask"]))
        logp = r(**batch)
    assert latents.dtype == torch.float32 and logp.dtype == torch.float32
    assert torch.isfinite(logp).all() and (logp <= 0).all()


@pytest.mark.parametrize("flavour", ["lr-grpo", "flr-grpo"])
def test_rl_step_under_bf16_autocast_moves_only_the_head_in_fp32(tok, monkeypatch, flavour):
    if flavour == "lr-grpo":
        r = tiny_reasoner(tok)
    else:
        r = tiny_reasoner(tok, head="flr", refine_steps=2, n_factors=3)
    train = toy_samples(tok, 4)
    llm_before, head_before = _snapshot(r.llm), _snapshot(r.head)
    catalog = None
    opts = dict(lr=1e-2, group_size=4, groups_per_step=4, warmup_steps=0, max_steps=1, mixed_precision="bf16")
    if flavour == "flr-grpo":  # hybrid reward (exact match read off the logits), base advantage, KL, regularisers
        opts.update(reward="hybrid", advantage="base", regularisers=True, beta=0.04)
        enc = SegmentEncoder(tok)
        catalog = [enc.target_ids(t) for t in TITLES]
    spy = DtypeSpy(monkeypatch, r.llm)
    log = train_lr_grpo(r, tok, train, train[:4], LRGRPOConfig(**opts), catalog=catalog)
    spy.close()
    spy.check(embeds_dtype=torch.float32)
    assert log["steps"] == 1
    assert all(math.isfinite(v) for v in log["history"][0].values())
    assert math.isfinite(log["valid_neg_ppl"]) and math.isfinite(log["valid_neg_ppl_before"])
    if flavour == "flr-grpo":
        assert "exact_match" in log["history"][0]
    _assert_fp32_and(r.llm, llm_before, moved=False)
    _assert_fp32_and(r.head, head_before, moved=True)


# ------------------------------------------------------------------------------------------- decoding
N_USERS = 16
# fp32 score gap (mean log-prob per token) above which bf16 must keep two titles' order: bf16 activations
# (autocast, fp32 weights) swapped none above 0.04 here; bf16 weights (load_backbone's GPU dtype) one at 0.11.
DELTA_AUTOCAST, DELTA_BF16_WEIGHTS = 0.1, 0.25


def sharpen(model, seed=0):
    """Decisive, user-dependent preferences without minutes of fitting: matrices N(0, 0.3), the (tied)
    embedding x30, so titles' scores differ by tenths to units and the ranking depends on the history.
    (fit_to_rule's few steps leave every title within 0.01 of the others, for every user: all near-ties.)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.normal_(0, 0.3, generator=g)
        emb = model.llm if hasattr(model, "llm") else model
        emb.get_input_embeddings().weight.mul_(30)
    return model


def _dataset(seed):
    rng = np.random.default_rng(seed)
    histories = [list(rng.choice(len(TITLES), size=1 + u % 3, replace=False)) for u in range(N_USERS)]
    return catalog_dataset(TITLES, histories, [(h[0] + 3) % len(TITLES) for h in histories])


def _decode(model, tok, ds):
    """{user: {item: score}} of a full ranking of the 6 catalog titles (BIGRec's length penalty 1)."""
    out = decode_rows(model, tok, ds, np.arange(N_USERS), "musics", {"num_beams": 6, "num_return": 6, "batch_size": 8})
    ranked = [dict(zip(ids, scores)) for ids, scores in zip(out["pred_item_ids"], out["pred_scores"])]
    assert all(len(r) == len(TITLES) and -1 not in r for r in ranked)  # every title ranked, for every user
    assert all(np.isfinite(list(r.values())).all() for r in ranked)
    return ranked


def _check_against_fp32(ref, got, delta):
    """bf16 keeps 8 bits of mantissa: it shifts every score of a user by up to ~1 on this sharpened model
    (measured, mostly together), and swaps titles whose fp32 scores are within a few hundredths. Every
    pair further apart than `delta` must keep its order; most pairs are (so this is not vacuous)."""
    total, swapped = 0, []
    for r, g in zip(ref, got):
        for a in r:
            for b in r:
                if r[a] - r[b] > delta:
                    total += 1
                    if g[a] <= g[b]:
                        swapped.append(round(r[a] - r[b], 3))
    assert total >= 0.75 * N_USERS * 15, total  # of the 15 title pairs per user
    assert not swapped, f"{len(swapped)} of {total} clearly ordered title pairs swapped, fp32 gaps {swapped}"
    top1 = np.mean([max(r, key=r.get) == max(g, key=g.get) for r, g in zip(ref, got)])
    assert top1 >= 0.75, top1  # measured 15/16: the one swap had an fp32 margin of 0.036
    assert len({max(r, key=r.get) for r in ref}) > 1  # the winner depends on the user


@pytest.fixture(scope="module")
def decode_case(smollm2_tokenizer, tmp_path_factory):
    tok = copy.deepcopy(smollm2_tokenizer)
    r = sharpen(tiny_reasoner(tok))
    folder = tmp_path_factory.mktemp("sharp") / "model"
    r.save(folder, tok)
    ds = _dataset(0)
    return r, tok, ds, folder, _decode(copy.deepcopy(r), tok, ds)


def test_latent_decode_under_bf16_autocast_agrees_with_fp32(decode_case, monkeypatch):
    r, tok, ds, _, ref = decode_case
    r = copy.deepcopy(r)
    spy = DtypeSpy(monkeypatch, r.llm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _decode(r, tok, ds)
    spy.close()
    spy.check(embeds_dtype=torch.float32)
    _check_against_fp32(ref, got, DELTA_AUTOCAST)


def test_latent_model_loaded_in_bf16_decodes_like_fp32(decode_case, monkeypatch):
    """The GPU decode path: load_decodable(dtype=bfloat16) gives a bf16 LLM and an fp32 head; the latent
    must be cast to bf16 before it joins the bf16 token embeddings."""
    from latentrec.llm.latent import load_decodable

    _, tok, ds, folder, ref = decode_case
    model, tok2 = load_decodable(folder, dtype=torch.bfloat16)
    assert model.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.head.parameters()} == {torch.float32}
    spy = DtypeSpy(monkeypatch, model.llm)
    got = _decode(model, tok2, ds)
    spy.close()
    spy.check(embeds_dtype=torch.bfloat16)
    _check_against_fp32(ref, got, DELTA_BF16_WEIGHTS)


def test_plain_backbone_loaded_in_bf16_decodes_like_fp32(tok, tmp_path, monkeypatch):
    """BIGRec/D3's decode of an SFT model saved in fp32 and loaded in bf16: the ids path (shared prompt
    prefix, beam-tree KV layout with its bf16 additive mask)."""
    from latentrec.llm.backbone import load_backbone

    llm = sharpen(tiny_llama_like(tok), seed=1)
    llm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ds = _dataset(1)
    ref = _decode(llm, tok, ds)
    model, tok2 = load_backbone(tmp_path, dtype=torch.bfloat16)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    spy = DtypeSpy(monkeypatch, model)
    got = _decode(model, tok2, ds)
    spy.close()
    spy.check()
    _check_against_fp32(ref, got, DELTA_BF16_WEIGHTS)

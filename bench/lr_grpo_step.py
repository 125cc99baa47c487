"""One LR-GRPO step (`step_loss` + backward): the K latent copies sharing ONE prompt KV cache against
each copy recomputing its prompt, everything else identical.

Same model (SmolLM2-135M-Instruct + a fresh LatentRATT, LLM frozen), same samples (real CDs train
rows, the LatentR3 prompt), same noise, K latent draws per sample; the same `step_loss` (rewards,
advantages, surrogate, backward) runs on every side, only the prompt's keys/values differ:

(i)   recompute: each of the K copies runs its own pass over the prompt (the reference's K-row batch);
(ii)  copy: one prompt pass, its KV cache copied K times (`repeat_interleave`, HF's layout);
(iii) shared: one prompt pass, the K copies read its one KV cache (their latent + target tokens are
      columns of the prompt's cache row, a 4D mask keeps the copies apart).

The variants alternate (order rotating) over --repeats rounds; prints wall and process-CPU seconds per
step (median), speed-ups, the KV-cache bytes each holds for the prompts, and the largest loss and
gradient differences against (iii) (they must agree to float32 rounding).

    PYTHONPATH=src .venv/bin/python bench/lr_grpo_step.py --groups 4 --k 8
    PYTHONPATH=src .venv/bin/python bench/lr_grpo_step.py --quick
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.grpo import LRGRPOConfig, draw_noise, step_loss  # noqa: E402
from latentrec.llm.latent import collate_prompt_target, new_reasoner  # noqa: E402
from latentrec.llm.recommender import encode_split  # noqa: E402


class PerCopyPrompt(torch.nn.Module):
    """Runs the reasoner with every prompt row repeated K times (copies=1 each): K prompt passes."""

    def __init__(self, reasoner):
        super().__init__()
        self.module = reasoner  # step_loss reads the head through `.module`, as with DDP

    def forward(self, prompt_ids, prompt_mask, target_ids, target_mask, copies=1, noise=None, **kw):
        rep = lambda t: t.repeat_interleave(copies, 0)  # noqa: E731
        flat = None if noise is None else noise.reshape(-1, 1, *noise.shape[2:])
        return self.module(rep(prompt_ids), rep(prompt_mask), rep(target_ids), rep(target_mask), 1, flat, **kw)


def kv_bytes(reasoner, batch, rows_per_prompt: int) -> int:
    """Bytes of the prompts' KV cache (all layers) when each prompt's row is held `rows_per_prompt` times."""
    with torch.no_grad():
        cache = reasoner.encode_prompt(batch["prompt_ids"], batch["prompt_mask"]).cache
    return rows_per_prompt * sum(
        t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
    )


def main() -> None:
    ap = _setup.parser(__doc__)
    ap.add_argument("--groups", type=int, default=4, help="samples per optimiser step (groups_per_step)")
    ap.add_argument("--k", type=int, default=8, help="latent draws per sample")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (each runs every variant once)")
    ap.add_argument("--quick", action="store_true", help="2 samples, K=4, 1 round: a smoke run")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.groups, args.k, args.repeats = 2, 4, 1
    llm, tok, ds = _setup.load(args)
    model = new_reasoner(llm, tok, seed=0)
    for p in model.llm.parameters():
        p.requires_grad_(False)
    samples = encode_split(ds, "train", tok, "musics", limit=args.groups, sample_seed=0)
    cfg = LRGRPOConfig(group_size=args.k, groups_per_step=args.groups, advantage_groups=args.groups)
    noise = draw_noise(args.groups, cfg, 1, llm.config.hidden_size, torch.Generator().manual_seed(0), "cpu")
    batch = collate_prompt_target(samples, tok.pad_token_id)
    prompt_tokens = sum(s.prompt_len for s in samples) / len(samples)
    target_tokens = sum(len(s.input_ids) - s.prompt_len for s in samples) / len(samples)
    print(
        f"{args.groups} samples x K={args.k}; mean prompt {prompt_tokens:.0f} tokens, target {target_tokens:.1f}; "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}",
        flush=True,
    )

    def step(runner, share):
        def run():
            model.share_prompt_kv = share
            model.zero_grad()
            loss, _ = step_loss(runner, batch, noise, cfg)
            (loss / args.groups).backward()
            return float(loss) / args.groups, {n: p.grad.clone() for n, p in model.head.named_parameters()}

        return run

    variants = {"recompute": step(PerCopyPrompt(model), False), "copy": step(model, False), "shared": step(model, True)}
    step(model, True)()  # warm-up (allocator, attention registration)
    names = list(variants)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    results = {}
    load = [os.getloadavg()]
    for r in range(args.repeats):
        for name in names[r % 3 :] + names[: r % 3]:
            w0, c0 = time.perf_counter(), time.process_time()
            results[name] = variants[name]()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
        load.append(os.getloadavg())
    kv = {
        "recompute": kv_bytes(model, batch, args.k),
        "copy": kv_bytes(model, batch, args.k),
        "shared": kv_bytes(model, batch, 1),
    }
    out = {
        "groups": args.groups,
        "k": args.k,
        "prompt_tokens": prompt_tokens,
        "target_tokens": target_tokens,
        "threads": torch.get_num_threads(),
        "load_average": load,
    }
    l_ref, g_ref = results["shared"]
    for name in names:
        loss, grads = results[name]
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        gdiff = max(float((grads[n] - g_ref[n]).abs().max()) for n in grads)
        out[name] = {
            "wall_s": w,
            "cpu_s": c,
            "kv_cache_bytes": kv[name],
            "loss": loss,
            "max_grad_diff_vs_shared": gdiff,
        }
        print(
            f"{name:9s} {w:6.2f} s/step wall, {c:6.2f} CPU s/step; prompt KV {kv[name] / 2**20:7.1f} MiB; "
            f"loss {loss:.6g}, max |grad - shared| {gdiff:.1e}"
        )
    gscale = max(float(g.abs().max()) for g in g_ref.values())
    for name in ("recompute", "copy"):
        out[name]["speedup_wall"] = out[name]["wall_s"] / out["shared"]["wall_s"]
        out[name]["speedup_cpu"] = out[name]["cpu_s"] / out["shared"]["cpu_s"]
        print(
            f"shared vs {name}: {out[name]['speedup_wall']:.2f}x wall, {out[name]['speedup_cpu']:.2f}x CPU, "
            f"{kv[name] / kv['shared']:.0f}x less prompt KV"
        )
    print(f"max |grad| {gscale:.1e}; load average per round {load}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

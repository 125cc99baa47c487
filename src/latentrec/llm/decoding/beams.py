"""Beam bookkeeping of the constrained search, step by step as HF's ``_beam_search`` does it: the catalog
continuations of the live beams, the finished slots, and when a prompt is done."""

from __future__ import annotations

import torch

from latentrec.llm.trie import TitleTrie

Hypothesis = tuple[int, float]  # (trie node of the generated sequence, final score)

NEG_INF = float("-inf")
# HF's threshold for a finished slot that is still empty (`_check_early_stop_heuristic`).
_EMPTY_SLOT_SCORE = -1.0e9


class Beams:
    """Per active prompt: running beams (score, trie node) and the `num_beams` finished slots."""

    def __init__(self, b: int, k: int, device):
        self.active = torch.arange(b, device=device)  # batch index of each active prompt
        # Only beam 0 holds a real prefix at the start (HF seeds beams 1.. with -1e9, which only ever
        # yields non-catalog padding hypotheses): the other beams start dead (-inf) on node -1.
        self.run_scores = torch.full((b, k), NEG_INF, device=device)
        self.run_scores[:, 0] = 0.0
        self.run_nodes = torch.full((b, k), -1, dtype=torch.int64, device=device)
        self.run_nodes[:, 0] = 0
        self.fin_scores = torch.full((b, k), NEG_INF, device=device)
        self.fin_nodes = torch.full((b, k), -1, dtype=torch.int64, device=device)

    def select(self, idx: torch.Tensor) -> None:
        for name in ("active", "run_scores", "run_nodes", "fin_scores", "fin_nodes"):
            setattr(self, name, getattr(self, name)[idx])


def candidates(vocab, live, beams: Beams, trie: TitleTrie, k: int, n_keep: int):
    """The best `n_keep` catalog continuations per prompt, best first: (score, source beam, token, node),
    each [A, n_keep] (-inf score, node -1 past the real ones).

    log-softmax over the full vocabulary, then the catalog constraint: only the tokens the trie allows
    after each live beam's node are finite, so only those candidates are formed (HF's dense beams x
    vocabulary matrix holds -inf everywhere else). `vocab` (LogitScores / HiddenScores): scores of the live
    beams; `live` their flat index prompt * k + beam, ascending."""
    a = beams.active.numel()
    device = live.device
    rows, edges = trie.edges(beams.run_nodes.reshape(-1)[live])
    toks = trie.child_tokens[edges]
    flat = live[rows]  # ascending: candidates come grouped by prompt
    scores = beams.run_scores.reshape(-1)[flat] + vocab.logprobs(rows, toks)
    prompt = flat // k
    counts = torch.bincount(prompt, minlength=a)
    width = max(n_keep, int(counts.max())) if prompt.numel() else n_keep
    pos = torch.arange(prompt.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[prompt]
    dense = torch.full((a, width), NEG_INF, device=device)
    dense[prompt, pos] = scores
    dense_id = torch.zeros((a, width), dtype=torch.int64, device=device)  # index into the candidates
    dense_id[prompt, pos] = torch.arange(prompt.numel(), device=device)
    cand_scores, pick = torch.topk(dense, n_keep, dim=1)  # sorted, best first; -inf past the real ones
    cand = torch.gather(dense_id, 1, pick)
    if prompt.numel() == 0:  # nothing allowed anywhere: every beam dies
        zeros = torch.zeros_like(cand)
        return cand_scores, zeros, zeros, torch.full_like(cand, -1)
    real = torch.isfinite(cand_scores)
    return cand_scores, flat[cand] % k, toks[cand], torch.where(real, trie.child_nodes[edges][cand], -1)


def advance(beams: Beams, cands, *, step, last_step, eos_ids, length_penalty, top_rank):
    """HF's beam bookkeeping for one step: finished candidates in the top `num_beams` ranks enter the
    finished slots (length-normalised), the best `num_beams` unfinished ones run on. Returns (source
    beam, next token, alive), each [A, k], and which prompts are done."""
    cand_scores, cand_beam, cand_tok, cand_nodes = cands
    k = beams.run_scores.shape[1]
    # HF's max-length criterion marks every candidate of the last step as finished.
    cand_done = torch.ones_like(cand_tok, dtype=torch.bool) if last_step else torch.isin(cand_tok, eos_ids)
    new_fin = cand_scores / ((step + 1) ** length_penalty)
    eligible = cand_done & top_rank[None, :] & torch.isfinite(cand_scores)
    merged_scores = torch.cat((beams.fin_scores, torch.where(eligible, new_fin, NEG_INF)), dim=1)
    merged_nodes = torch.cat((beams.fin_nodes, cand_nodes), dim=1)
    beams.fin_scores, pick = torch.topk(merged_scores, k, dim=1)
    beams.fin_nodes = torch.gather(merged_nodes, 1, pick)

    beams.run_scores, pick = torch.topk(torch.where(cand_done, NEG_INF, cand_scores), k, dim=1)
    src_beam = torch.gather(cand_beam, 1, pick)
    next_tok = torch.gather(cand_tok, 1, pick)
    alive = torch.isfinite(beams.run_scores)
    beams.run_nodes = torch.where(alive, torch.gather(cand_nodes, 1, pick), -1)

    # HF's early_stopping=False heuristic: stop once the best running beam, normalised by the current
    # generated length, cannot beat the worst of `num_beams` finished hypotheses.
    best_running = beams.run_scores[:, 0] / ((step + 1) ** length_penalty)
    slots_full = torch.isfinite(beams.fin_scores).all(dim=1)
    worst_finished = torch.where(
        slots_full, beams.fin_scores.min(dim=1).values, torch.full_like(best_running, _EMPTY_SLOT_SCORE)
    )
    done = ~(best_running > worst_finished) | ~alive[:, 0]
    if last_step:
        done = torch.ones_like(done)
    return src_beam, next_tok, alive, done


def collect(beams: Beams, slots: list[int], results: list[list[Hypothesis]], num_return: int) -> None:
    """Write the finished hypotheses of the given prompt slots into `results` (real ones only)."""
    for slot in slots:
        scores = beams.fin_scores[slot]
        keep = torch.isfinite(scores)
        nodes = beams.fin_nodes[slot][keep][:num_return].tolist()
        vals = scores[keep][:num_return].tolist()
        results[int(beams.active[slot])] = list(zip(nodes, vals))

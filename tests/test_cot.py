"""The CoT baseline: greedy text reasoning, then the catalog-constrained title (tiny Llama, real tokenizer)."""

import pytest
import torch

from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.cot import CoTConfig, greedy_reasoning, reason
from latentrec.llm.decoding import constrained_beam_search
from latentrec.llm.prompts import SegmentEncoder
from latentrec.llm.recommender import catalog_sequences, decode_rows
from latentrec.llm.trie import TitleTrie
from tests.latent_toys import ALBUMS, catalog_dataset

TITLES = ALBUMS


@pytest.fixture(scope="module")
def ds():
    n = len(TITLES)
    # Histories of different lengths, so the batched reasoning runs on left-padded prompts.
    return catalog_dataset(
        TITLES, [[(u + j) % n for j in range(1 + u % 4)] for u in range(6)], [(u + 5) % n for u in range(6)]
    )


@pytest.fixture(scope="module")
def llm(smollm2_tokenizer):
    return tiny_llama_like(smollm2_tokenizer, seed=3).eval()


BEAM1 = {"num_beams": 1, "num_return": 1, "max_new_tokens": 32, "batch_size": 4}


def naive_greedy(llm, prompt, n, eos):
    """One full forward pass per token, no cache, no padding."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(llm(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt == eos:
                break
            seq.append(nxt)
    return seq[len(prompt) :]


def test_cot_returns_catalog_titles_with_bounded_reasoning(llm, smollm2_tokenizer, ds):
    tok = smollm2_tokenizer
    rows = torch.arange(len(ds.test)).numpy()
    cfg = dict(BEAM1, cot={"max_reasoning_tokens": 7})
    out = decode_rows(llm, tok, ds, rows, "musics", cfg)
    assert len(out) == len(ds.test)
    assert all(len(t) == 1 and t[0] in TITLES for t in out["pred_titles"])
    assert all(0 <= n <= 7 for n in out["reasoning_tokens"]) and (out["seconds"] > 0).all()

    # Each user's reasoning equals an unbatched greedy loop; its title equals a beam-1 constrained decode
    # of [prompt, cue, reasoning, answer cue] on its own.
    enc = SegmentEncoder(tok)
    trie = TitleTrie.build(catalog_sequences(ds, tok), vocab_size=llm.get_input_embeddings().num_embeddings)
    cot = CoTConfig(max_reasoning_tokens=7)
    cue = tok.encode(cot.reason_cue, add_special_tokens=False)
    answer = tok.encode(cot.answer_cue.format(c="musics"), add_special_tokens=False)
    for r, (hist, n_reason, title) in enumerate(
        zip(ds.test["history_item_ids"], out["reasoning_tokens"], out["pred_titles"])
    ):
        prompt = enc.prompt_ids([TITLES[i] for i in hist], "musics") + cue
        thought = naive_greedy(llm, prompt, 7, tok.eos_token_id)
        assert len(thought) == n_reason
        assert out["reasoning"][r] == tok.decode(thought)
        ((node, _),) = constrained_beam_search(
            llm,
            [prompt + thought + answer],
            trie,
            num_beams=1,
            num_return=1,
            max_new_tokens=32,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0]
        assert TITLES[trie.items(node)[0]] == title[0]


def test_cot_without_reasoning_budget_is_the_plain_decode(llm, smollm2_tokenizer, ds):
    rows = torch.arange(len(ds.test)).numpy()
    plain = decode_rows(llm, smollm2_tokenizer, ds, rows, "musics", BEAM1)
    cot = decode_rows(llm, smollm2_tokenizer, ds, rows, "musics", dict(BEAM1, cot={"max_reasoning_tokens": 0}))
    assert (cot["reasoning_tokens"] == 0).all() and (cot["reasoning"] == "").all()
    for col in ("pred_item_ids", "pred_titles", "pred_scores"):
        assert plain[col].tolist() == cot[col].tolist()
    # With a budget the prompt changes (cues and reasoning), so the scores do too.
    some = decode_rows(llm, smollm2_tokenizer, ds, rows, "musics", dict(BEAM1, cot={"max_reasoning_tokens": 3}))
    assert plain["pred_scores"].tolist() != some["pred_scores"].tolist()


def test_eos_ends_the_reasoning(llm, smollm2_tokenizer):
    tok = smollm2_tokenizer
    eos = tok.eos_token_id

    def favour_eos(module, args, output):
        output = output.clone()
        output[..., eos] += 1e4
        return output

    prompts = [[10, 11, 12], [13, 14]]
    assert [len(r) for r in greedy_reasoning(llm, tok, prompts, 5)] == [5, 5]
    handle = llm.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        assert greedy_reasoning(llm, tok, prompts, 5) == [[], []]
        r = reason(llm, tok, prompts, CoTConfig(max_reasoning_tokens=5), "musics")
    finally:
        handle.remove()
    assert r.tokens == [[], []]
    answer = tok.encode(CoTConfig().answer_cue.format(c="musics"), add_special_tokens=False)
    assert all(p[-len(answer) :] == answer for p in r.prompts)  # the answer cue still follows


def test_cot_config_checks():
    with pytest.raises(ValueError):
        CoTConfig.from_dict({"max_reasoning_tokens": -1})
    with pytest.raises(ValueError):
        CoTConfig.from_dict({"max_tokens": 5})
    assert CoTConfig.from_dict(None).max_reasoning_tokens == 128

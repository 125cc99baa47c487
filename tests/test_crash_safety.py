"""Killed jobs resume exactly: a decode shard from its last finished chunk; an SFT run from the last
complete checkpoint when the process dies (os._exit, as kill -9) at several points of a save."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from latentrec.data.processed_io import save_dataset
from latentrec.llm.backbone import tiny_llama_like
from tests.latent_toys import TITLES, catalog_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_run(smollm2_tokenizer, tmp_path):
    histories = [[(u + k) % 6 for k in range(1 + u % 3)] for u in range(11)]
    ds = catalog_dataset(TITLES, histories, [(u + 3) % 6 for u in range(11)])
    for df in (ds.train, ds.valid, ds.test):  # the columns a saved dataset carries
        df["history_ratings"] = [[5.0] * len(h) for h in df["history_item_ids"]]
        df["history_timestamps"] = [list(range(len(h))) for h in df["history_item_ids"]]
        df["rating"], df["timestamp"] = 5.0, 100
    save_dataset(ds, tmp_path / "data")
    tiny_llama_like(smollm2_tokenizer).save_pretrained(tmp_path / "model")
    smollm2_tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path


def _decode(tmp, out, extra=()):
    from latentrec.commands.main import main

    main(
        [
            "decode",
            "--data",
            str(tmp / "data"),
            "--model",
            str(tmp / "model"),
            "--domain",
            "musics",
            "--cfg",
            '{"num_beams": 3, "num_return": 3, "batch_size": 2}',
            "--out",
            str(out),
            *extra,
        ]
    )


def test_killed_decode_shard_resumes_from_its_last_chunk(tiny_run, monkeypatch):
    import latentrec.llm.recommender as rec

    _decode(tiny_run, tiny_run / "straight.parquet")
    want = pd.read_parquet(tiny_run / "straight.parquet")
    assert not (tiny_run / ".straight.parquet.partial").exists()  # cleaned up after success

    calls = []
    real = rec._decode_batch

    def dying(ctx, prompts, out):
        calls.append(len(prompts))
        if len(calls) == 6:  # 11 rows in batches of 2, chunks of 4 batches: dies in the second chunk
            raise KeyboardInterrupt
        return real(ctx, prompts, out)

    monkeypatch.setattr(rec, "_decode_batch", dying)
    out = tiny_run / "shard.parquet"
    with pytest.raises(KeyboardInterrupt):
        _decode(tiny_run, out)
    assert not out.exists() and len(list((tiny_run / ".shard.parquet.partial").glob("rows-*.parquet"))) == 1
    calls.clear()
    monkeypatch.setattr(rec, "_decode_batch", lambda *a: (calls.append(len(a[1])), real(*a))[1])
    _decode(tiny_run, out)
    assert calls == [2, 1]  # only the second chunk (rows 8-10) was decoded again
    got = pd.read_parquet(out)
    cols = ["row", "user_id", "pred_item_ids", "pred_titles", "pred_scores"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    # A chunk from another configuration is never reused.
    monkeypatch.setattr(rec, "_decode_batch", dying)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        _decode(tiny_run, tiny_run / "other.parquet")
    calls.clear()
    monkeypatch.setattr(rec, "_decode_batch", lambda *a: (calls.append(len(a[1])), real(*a))[1])
    from latentrec.commands.main import main

    main(
        [
            "decode",
            "--data",
            str(tiny_run / "data"),
            "--model",
            str(tiny_run / "model"),
            "--domain",
            "musics",
            "--cfg",
            '{"num_beams": 2, "num_return": 2, "batch_size": 2}',
            "--out",
            str(tiny_run / "other.parquet"),
        ]
    )
    assert calls == [2, 2, 2, 2, 2, 1]  # all 11 rows again


SFT_SCRIPT = textwrap.dedent("""
    import os, sys, json
    from pathlib import Path
    import torch
    from transformers import AutoTokenizer
    import latentrec.llm.sft as sft
    from latentrec.llm.backbone import tiny_llama_like
    from latentrec.llm.prompts import SegmentEncoder, encode_sample

    out, kill_point, kill_save = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    tok = AutoTokenizer.from_pretrained(sys.argv[4])
    enc = SegmentEncoder(tok)
    titles = ["Album Alpha", "Album Beta", "Album Gamma", "Album Delta", "Album Omega", "Album Sigma"]
    data = [encode_sample(enc, [titles[(i + k) % 6] for k in range(3)], titles[(i + 3) % 6], "musics")
            for i in range(24)]
    saves = [0]
    real_save = sft.save_checkpoint

    def die(point):
        if point == kill_point and saves[0] == kill_save:
            os._exit(137)  # as kill -9: no cleanup, no finally blocks

    real_write = sft.write_json

    def write_json(obj, path):  # the counters are the last file of a checkpoint: die with the rest written
        if str(path).endswith("trainer_state.json"):
            die("before_state_file")
        return real_write(obj, path)

    def save(acc, ckpt_dir, state, *rest):
        saves[0] += 1
        die("before_save")
        real_rename = Path.rename
        def rename(self, target):
            real_rename(self, target)
            die("after_first_rename" if str(target).endswith(".prev") else "after_second_rename")
        Path.rename = rename
        try:
            real_save(acc, ckpt_dir, state, *rest)
        finally:
            Path.rename = real_rename

    sft.write_json = write_json
    sft.save_checkpoint = save
    cfg = sft.SFTConfig(lr=1e-3, warmup_steps=1, effective_batch=8, micro_batch=4, max_epochs=1, patience=5,
                        checkpoint_every=1, valid_limit=None)
    model = tiny_llama_like(tok, seed=1)
    sft.train_sft(model, tok, data, data[:8], cfg, out)
    torch.save(model.state_dict(), out / "final.pt")
""")


@pytest.mark.slow
def test_sft_killed_during_a_checkpoint_save_resumes_to_the_same_weights(smollm2_tokenizer, tmp_path):
    tok_dir = tmp_path / "tok"
    smollm2_tokenizer.save_pretrained(tok_dir)
    script = tmp_path / "run_sft.py"
    script.write_text(SFT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'src'}")

    def run(out, point="none", at=0):
        return subprocess.run(
            [sys.executable, str(script), str(out), point, str(at), str(tok_dir)],
            env=env,
            capture_output=True,
            text=True,
        )

    assert run(tmp_path / "straight").returncode == 0
    want = torch.load(tmp_path / "straight/final.pt")
    for point in ("before_save", "before_state_file", "after_first_rename", "after_second_rename"):
        out = tmp_path / point
        killed = run(out, point, 2)
        assert killed.returncode == 137, killed.stderr[-2000:]
        resumed = run(out)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        got = torch.load(out / "final.pt")
        for k, v in want.items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=f"{point}: {k}")
        assert sorted(p.name for p in out.iterdir()) == ["final.pt", "model"], point


def test_decode_length_defaults_to_the_longest_catalogue_title(tiny_run, smollm2_tokenizer):
    """No target is unreachable: without max_new_tokens the decode may emit the longest title's tokens."""
    import json

    from latentrec.llm.prompts import SegmentEncoder

    _decode(tiny_run, tiny_run / "p.parquet")
    used = json.loads((tiny_run / "p.json").read_text())["generation_config"]
    enc = SegmentEncoder(smollm2_tokenizer)
    assert used["max_new_tokens"] == max(len(enc.target_ids(t)) for t in TITLES) > 0

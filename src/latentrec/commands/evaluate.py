"""Scoring runs: HR/NDCG of a run's ranked lists, and paired t-tests between methods."""

from __future__ import annotations

from pathlib import Path

from latentrec.commands.args import DATA_HELP, cfg_help, json_arg


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


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "evaluate",
        help="ranked lists -> per-row and aggregate HR/NDCG",
        description="Score a run's ranked lists on the split named in its config.yaml: HR and NDCG per row "
        "and aggregated, by item id and by title.",
    )
    s.add_argument("--data", required=True, help=DATA_HELP)
    s.add_argument(
        "--predictions",
        required=True,
        help="a run's predictions.parquet (its config.yaml beside names dataset, method, seed, split)",
    )
    s.add_argument("--rows", required=True, help="per-row metrics file to write (.parquet), e.g. rows.parquet")
    s.add_argument("--metrics", required=True, help="aggregate metrics file to write (.json), e.g. metrics.json")
    s.add_argument(
        "--test-limit", type=int, default=None, help="score only the first N rows of the split (default: all)"
    )
    s.set_defaults(func=cmd_evaluate)

    for name, func, text, extra in (
        (
            "significance",
            cmd_significance,
            "paired t-tests between methods (per row and per seed)",
            "Every method against the strongest baseline of its dataset",
        ),
        (
            "llm-vs-strongest",
            cmd_llm_vs_strongest,
            "each LLM method against the strongest traditional baseline (paired t-tests)",
            "Each LLM method (cfg llm_methods) against the strongest baseline of its dataset, on the same test rows",
        ),
    ):
        s = sub.add_parser(name, help=text, description=f"{extra}: paired t-tests per row and per seed.")
        s.add_argument(
            "--metrics",
            nargs="+",
            required=True,
            help="metrics.json files of the runs (from `evaluate`; rows.parquet beside each)",
        )
        keys = "baselines, metrics, primary_metric" + (
            ", llm_methods, same_split, alpha" if name == "llm-vs-strongest" else ""
        )
        s.add_argument(
            "--cfg",
            type=json_arg,
            default={},
            help=cfg_help(
                f"test config built from config.yaml's `report` block (report.baselines, "
                f"report.significance_metrics, report.primary_metric); keys {keys}",
                '{"baselines": ["MostPop", "SASRec"]}',
                "without baselines nothing is tested (default {})",
            ),
        )
        s.add_argument("--out-csv", required=True, help="table file to write (.csv)")
        s.add_argument("--out-md", required=True, help="table file to write (.md)")
        s.set_defaults(func=func)

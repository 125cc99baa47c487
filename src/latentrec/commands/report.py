"""Reports: Table 1 and the dataset statistics, LatentR3's gains and analyses, FLR's tables and figures, each beside
the published values."""

from __future__ import annotations

from pathlib import Path

from latentrec.commands.args import cfg_help, json_arg


def cmd_report(a) -> None:
    from latentrec.report.build import build_report

    build_report(a.metrics, a.stats, a.cfg, Path(a.out_dir))


def cmd_report_latentr3(a) -> None:
    from latentrec.io_utils import read_yaml
    from latentrec.report.latentr3 import build

    data_dirs = dict(x.split("=", 1) for x in a.data)
    build(a.metrics, data_dirs, a.rl_logs, a.cfg, read_yaml(a.paper), Path(a.out_dir))


def cmd_report_flr(a) -> None:
    from latentrec.io_utils import read_yaml
    from latentrec.report.flr import build

    build(
        a.metrics,
        dict(x.split("=", 1) for x in a.data),
        a.factors,
        a.timings,
        a.cfg,
        read_yaml(a.paper),
        Path(a.out_dir),
    )


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "report",
        help="tables and figures beside the published numbers",
        description="Table 1 (.md, .csv, .tex, NDCG@10 figure) beside the published numbers, and the dataset "
        "statistics table.",
    )
    s.add_argument("--metrics", nargs="+", required=True, help="metrics.json files of the runs (from `evaluate`)")
    s.add_argument(
        "--stats", nargs="+", required=True, help="stats.json of every dataset (in its processed-data folder)"
    )
    s.add_argument(
        "--cfg",
        type=json_arg,
        required=True,
        help=cfg_help(
            "report config built from config.yaml's `report` block; keys paper_results, "
            "table, paper_names, display_names, method_order, test_limit",
            '{"paper_results": "config/paper_results.yaml"}',
        ),
    )
    s.add_argument("--out-dir", required=True, help="folder for the tables and figures (e.g. results/tables)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser(
        "report-latentr3",
        help="LatentR3 gains, ablation table and analysis figures",
        description="LatentR3's gains over each backbone method, the ablation table and Figures 2-4, beside "
        "the published values.",
    )
    s.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        help="metrics.json of the runs (from `evaluate`; rows.parquet beside each)",
    )
    s.add_argument(
        "--data",
        nargs="+",
        default=[],
        help="DATASET=processed-data folder pairs, e.g. CDs_and_Vinyl=results/CDs_and_Vinyl/data (for item popularity)",
    )
    s.add_argument(
        "--rl-logs",
        nargs="*",
        default=[],
        help="rl_log.json files of the RL grid points (from `latent-rl`; training cost; Figure 4 "
        "takes each seed's selected point)",
    )
    s.add_argument(
        "--cfg",
        type=json_arg,
        required=True,
        help=cfg_help(
            "the `report.latentr3` block of config.yaml, plus test_limit and recipes "
            "({latent method: recipe}); keys pairs, ablation, lengths, popularity_methods, "
            "popular_fraction, cost_methods, grpo_compare",
            '{"pairs": {"BIGRec+LatentR3": "BIGRec"}}',
        ),
    )
    s.add_argument("--paper", required=True, help="the published values, e.g. config/paper_results.yaml")
    s.add_argument("--out-dir", required=True, help="folder for the tables and figures (e.g. results/tables)")
    s.set_defaults(func=cmd_report_latentr3)

    s = sub.add_parser(
        "report-flr",
        help="FLR Tables 2-4 and Figures 4, 6-9",
        description="FLR's Tables 2-4 and Figures 4, 6-9, beside the published values.",
    )
    s.add_argument(
        "--metrics", nargs="*", default=[], help="metrics.json of the runs (from `evaluate`; rows.parquet beside each)"
    )
    s.add_argument(
        "--data",
        nargs="*",
        default=[],
        help="DATASET=processed-data folder pairs, e.g. CDs_and_Vinyl=results/CDs_and_Vinyl/data (for item popularity)",
    )
    s.add_argument("--factors", nargs="*", default=[], help="flr_factors.npz files (from `flr-factors`)")
    s.add_argument("--timings", nargs="*", default=[], help="inference_time.json files (from `time-decode`)")
    s.add_argument(
        "--cfg",
        type=json_arg,
        required=True,
        help=cfg_help(
            "the `report.flr` block of config.yaml, plus n_factors and test_limit; keys "
            "table2, table3, table4, factors, timing, k_methods, popularity_methods, ...",
            '{"table2": {"method": "BIGRec+FLR"}}',
        ),
    )
    s.add_argument("--paper", required=True, help="the published values, e.g. config/paper_results.yaml")
    s.add_argument("--out-dir", required=True, help="folder for the tables and figures (e.g. results/tables)")
    s.set_defaults(func=cmd_report_flr)

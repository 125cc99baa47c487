# Tables and figures beside the published numbers; `snakemake --report` collects them.


rule report_tables:
    input:
        metrics=all_metrics(),
        stats=expand("results/{dataset}/data/stats.json", dataset=DATASETS),
        paper=config["report"]["paper_results"],
    output:
        md=report(
            "results/tables/table1.md",
            caption="../report/table1.rst",
            category="Tables",
        ),
        csv="results/tables/table1.csv",
        tex="results/tables/table1.tex",
        fig=report(
            "results/tables/table1_ndcg10.png",
            caption="../report/table1_fig.rst",
            category="Figures",
        ),
        stats_md=report(
            "results/tables/dataset_stats.md",
            caption="../report/dataset_stats.rst",
            category="Tables",
        ),
        stats_csv="results/tables/dataset_stats.csv",
    log:
        "logs/report_tables.log",
    benchmark:
        "benchmarks/report_tables.tsv"
    localrule: True
    conda:
        ENV
    params:
        cfg=as_arg(
            {
                "paper_results": config["report"]["paper_results"],
                "table": config["report"]["table"],
                "paper_names": report_paper_names(),
                "display_names": report_display_names(),
                "method_order": RUN_METHODS,
                "test_limit": TEST_LIMIT,
            }
        ),
        out=out_folder,
    shell:
        "python -m latentrec report --metrics {input.metrics:q} --stats {input.stats:q}"
        " --cfg {params.cfg} --out-dir {params.out:q} 2> {log:q}"


# LatentR3 Figure 4 needs an original-GRPO run (report.latentr3.grpo_compare); a config without one (the
# default) leaves the figure out, and the run summary says so.
LATENTR3_FIG4 = bool(config["report"].get("latentr3", {}).get("grpo_compare"))
LATENTR3_FIG4_OUTPUTS = (
    {
        "fig4_grpo": report(
            "results/tables/latentr3_fig4_grpo.png",
            caption="../report/latentr3.rst",
            category="LatentR3",
        ),
        "fig4_grpo_csv": "results/tables/latentr3_fig4_grpo.csv",
    }
    if LATENTR3_FIG4
    else {}
)
NOT_DRAWN = (
    []
    if LATENTR3_FIG4 or not config["report"].get("latentr3")
    else [
        "latentr3_fig4_grpo (LatentR3 Figure 4, the original GRPO against LR-GRPO): this config runs no "
        "original GRPO (report.latentr3.grpo_compare); config/paper.yaml does"
    ]
)


rule report_latentr3:
    input:
        metrics=latentr3_report_metrics(),
        rows=[
            p.replace("metrics.json", "rows.parquet")
            for p in latentr3_report_metrics()
        ],
        data=expand("results/{dataset}/data/train.parquet", dataset=DATASETS),
        rl_logs=latentr3_rl_logs(),
        paper=config["report"]["paper_results"],
    output:
        **LATENTR3_FIG4_OUTPUTS,
        gains=report(
            "results/tables/latentr3_gains.md",
            caption="../report/latentr3.rst",
            category="LatentR3",
        ),
        ablation=report(
            "results/tables/latentr3_ablation.md",
            caption="../report/latentr3.rst",
            category="LatentR3",
        ),
        fig2=report(
            "results/tables/latentr3_fig2_popularity.png",
            caption="../report/latentr3.rst",
            category="LatentR3",
        ),
        fig3=report(
            "results/tables/latentr3_fig3_reasoning_length.png",
            caption="../report/latentr3.rst",
            category="LatentR3",
        ),
        cost=report(
            "results/tables/latentr3_cost.png",
            caption="../report/latentr3.rst",
            category="LatentR3",
        ),
    log:
        "logs/report_latentr3.log",
    benchmark:
        "benchmarks/report_latentr3.tsv"
    localrule: True
    conda:
        ENV
    params:
        cfg=as_arg(
            dict(
                config["report"].get("latentr3", {}),
                test_limit=TEST_LIMIT,
                display_names=report_display_names(),
                recipes={  # Figure 4 finds a method's RL logs by its recipe
                    m: method_config(config, m)["recipe"]
                    for m in RUN_METHODS
                    if method_config(config, m)["family"] == "latent"
                },
            )
        ),
        data=[f"{d}=results/{d}/data" for d in DATASETS],
        out=out_folder,
    shell:
        "python -m latentrec report-latentr3 --metrics {input.metrics:q} --data {params.data:q}"
        " --rl-logs {input.rl_logs:q} --cfg {params.cfg} --paper {input.paper:q}"
        " --out-dir {params.out:q} 2> {log:q}"


rule report_flr:
    input:
        metrics=flr_report_metrics(),
        rows=[p.replace("metrics.json", "rows.parquet") for p in flr_report_metrics()],
        data=expand("results/{dataset}/data/train.parquet", dataset=DATASETS),
        factors=flr_factor_files(),
        timings=flr_timing_files(),
        paper=config["report"]["paper_results"],
    output:
        table2=report(
            "results/tables/flr_table2.md", caption="../report/flr.rst", category="FLR"
        ),
        table3=report(
            "results/tables/flr_table3.md", caption="../report/flr.rst", category="FLR"
        ),
        table4=report(
            "results/tables/flr_table4.md", caption="../report/flr.rst", category="FLR"
        ),
        disentanglement=report(
            "results/tables/flr_disentanglement.md",
            caption="../report/flr.rst",
            category="FLR",
        ),
        fig4=report(
            "results/tables/flr_fig4_factor_similarity.png",
            caption="../report/flr.rst",
            category="FLR",
        ),
        fig6=report(
            "results/tables/flr_fig6_factor_attention.png",
            caption="../report/flr.rst",
            category="FLR",
        ),
        fig7=report(
            "results/tables/flr_fig7_popularity.png",
            caption="../report/flr.rst",
            category="FLR",
        ),
        fig8=report(
            "results/tables/flr_fig8_factors_k.png",
            caption="../report/flr.rst",
            category="FLR",
        ),
        fig9=report(
            "results/tables/flr_fig9_inference_time.png",
            caption="../report/flr.rst",
            category="FLR",
        ),
        fig9_md="results/tables/flr_fig9_inference_time.md",
    log:
        "logs/report_flr.log",
    benchmark:
        "benchmarks/report_flr.tsv"
    localrule: True
    conda:
        ENV
    params:
        cfg=as_arg(dict(FLR_REPORT, n_factors=flr_n_factors(), test_limit=TEST_LIMIT)),
        data=[f"{d}=results/{d}/data" for d in DATASETS],
        out=out_folder,
    shell:
        "python -m latentrec report-flr --metrics {input.metrics:q} --data {params.data:q}"
        " --factors {input.factors:q} --timings {input.timings:q} --cfg {params.cfg}"
        " --paper {input.paper:q} --out-dir {params.out:q} 2> {log:q}"

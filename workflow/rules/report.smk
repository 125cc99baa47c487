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
    conda:
        ENV
    params:
        cfg=as_arg(
            {
                "paper_results": config["report"]["paper_results"],
                "table": config["report"]["table"],
                "paper_names": config["report"].get("paper_names", {}),
                "method_order": RUN_METHODS,
                "test_limit": TEST_LIMIT,
            }
        ),
    shell:
        "python -m latentrec report --metrics {input.metrics} --stats {input.stats}"
        " --cfg {params.cfg} --out-dir results/tables 2> {log}"

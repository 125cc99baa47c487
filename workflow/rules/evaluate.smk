# Metrics per run (HR/NDCG@K by item id and by title) and paired significance tests.


rule evaluate_run:
    input:
        data=processed("{dataset}"),
        predictions="results/{dataset}/{method}/seed{seed}/predictions.parquet",
    output:
        rows="results/{dataset}/{method}/seed{seed}/rows.parquet",
        metrics="results/{dataset}/{method}/seed{seed}/metrics.json",
    log:
        "logs/evaluate_run/{dataset}/{method}/seed{seed}.log",
    conda:
        ENV
    params:
        limit=TEST_LIMIT_ARG,
    shell:
        "python -m latentrec evaluate --data results/{wildcards.dataset}/data"
        " --predictions {input.predictions} --rows {output.rows} --metrics {output.metrics}"
        " {params.limit} 2> {log}"


rule significance_tests:
    input:
        metrics=all_metrics(),
        rows=[p.replace("metrics.json", "rows.parquet") for p in all_metrics()],
    output:
        csv="results/tables/significance.csv",
        md="results/tables/significance.md",
    log:
        "logs/significance_tests.log",
    conda:
        ENV
    params:
        cfg=as_arg(
            {
                "baselines": config["report"].get("baselines", []),
                "metrics": config["report"].get(
                    "significance_metrics", ["HR@10", "NDCG@10"]
                ),
                "primary_metric": config["report"].get("primary_metric", "NDCG@10"),
            }
        ),
    shell:
        "python -m latentrec significance --metrics {input.metrics} --cfg {params.cfg}"
        " --out-csv {output.csv} --out-md {output.md} 2> {log}"

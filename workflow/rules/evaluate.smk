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
    benchmark:
        "benchmarks/evaluate_run/{dataset}/{method}/seed{seed}.tsv"
    localrule: True
    conda:
        ENV
    params:
        limit=TEST_LIMIT_ARG,
        data=data_folder,
    shell:
        "python -m latentrec evaluate --data {params.data:q}"
        " --predictions {input.predictions:q} --rows {output.rows:q} --metrics {output.metrics:q}"
        " {params.limit} 2> {log:q}"


rule significance_tests:
    input:
        metrics=all_metrics(),
        rows=[p.replace("metrics.json", "rows.parquet") for p in all_metrics()],
    output:
        csv="results/tables/significance.csv",
        md="results/tables/significance.md",
    log:
        "logs/significance_tests.log",
    benchmark:
        "benchmarks/significance_tests.tsv"
    localrule: True
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
        "python -m latentrec significance --metrics {input.metrics:q} --cfg {params.cfg}"
        " --out-csv {output.csv:q} --out-md {output.md:q} 2> {log:q}"


# Each LLM method against the strongest traditional baseline of its dataset, on the same test rows.
rule llm_vs_strongest:
    input:
        metrics=all_metrics(),
        rows=[p.replace("metrics.json", "rows.parquet") for p in all_metrics()],
    output:
        csv="results/tables/llm_vs_strongest.csv",
        md=report(
            "results/tables/llm_vs_strongest.md",
            caption="../report/llm_vs_strongest.rst",
            category="Tables",
        ),
    log:
        "logs/llm_vs_strongest.log",
    benchmark:
        "benchmarks/llm_vs_strongest.tsv"
    localrule: True
    conda:
        ENV
    params:
        cfg=as_arg(
            {
                "baselines": config["report"].get("baselines", []),
                "llm_methods": [m for m in RUN_METHODS if m in llm_methods(config)],
                "metrics": config["report"].get(
                    "significance_metrics", ["HR@10", "NDCG@10"]
                ),
                "primary_metric": config["report"].get("primary_metric", "NDCG@10"),
                "same_split": config["report"].get("same_split", {}),
            }
        ),
    shell:
        "python -m latentrec llm-vs-strongest --metrics {input.metrics:q} --cfg {params.cfg}"
        " --out-csv {output.csv:q} --out-md {output.md:q} 2> {log:q}"

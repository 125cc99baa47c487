# Score-based recommenders (MostPop, Caser, GRU4Rec, SASRec, AlphaRec): one fit/predict interface.


rule fit_predict_recommender:
    input:
        processed("{dataset}"),
    output:
        predictions="results/{dataset}/{method}/seed{seed}/predictions.parquet",
        config="results/{dataset}/{method}/seed{seed}/config.yaml",
        train_log="results/{dataset}/{method}/seed{seed}/train_log.json",
    wildcard_constraints:
        method=_alternatives(recommender_methods(config)),
    params:
        cfg=lambda w: as_arg(method_config(config, w.method)),
    threads: 2
    log:
        "logs/fit_predict_recommender/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/fit_predict_recommender/{dataset}/{method}/seed{seed}.tsv"
    shell:
        "python -m latentrec fit-predict --data results/{wildcards.dataset}/data"
        " --dataset {wildcards.dataset} --method {wildcards.method} --cfg {params.cfg}"
        " --seed {wildcards.seed} --out results/{wildcards.dataset}/{wildcards.method}/seed{wildcards.seed}"
        " 2> {log}"

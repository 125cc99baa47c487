# Score-based recommenders (MostPop, Caser, GRU4Rec, SASRec, AlphaRec): one fit/predict interface.
# A method with a `grid` fans out into one job per grid point; a gather job selects on validation.
# AlphaRec's title embeddings are computed once per dataset and backbone and shared by every run.


rule item_title_embeddings:
    input:
        data=processed("{dataset}"),
        model="resources/models/{model}",
    output:
        "results/{dataset}/_cache/title_embeddings_{model}.npy",
    log:
        "logs/item_title_embeddings/{dataset}/{model}.log",
    benchmark:
        "benchmarks/item_title_embeddings/{dataset}/{model}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("item_title_embeddings"),
        runtime=job_runtime("item_title_embeddings"),
        nodes=gpu_nodes("item_title_embeddings"),
        gpu=job_gpus("item_title_embeddings"),
    params:
        launch=launcher("item_title_embeddings"),
        data=data_folder,
    shell:
        "{params.launch} item-embeddings --data {params.data:q} --model {input.model:q}"
        " --threads {threads} --out {output:q} 2> {log:q}"


rule fit_predict_recommender:
    input:
        data=processed("{dataset}"),
        emb=item_embeddings_input,
    output:
        predictions="results/{dataset}/{method}/seed{seed}/predictions.parquet",
        valid="results/{dataset}/{method}/seed{seed}/predictions_valid.parquet",
        config="results/{dataset}/{method}/seed{seed}/config.yaml",
    log:
        "logs/fit_predict_recommender/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/fit_predict_recommender/{dataset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=_alternatives(recommender_methods(config, grid=False)),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=job_mem_mb("fit_predict_recommender"),
        runtime=job_runtime("fit_predict_recommender"),
    params:
        emb=item_embeddings_arg,
        cfg=lambda w: as_arg(method_config(config, w.method)),
        data=data_folder,
        out=out_folder,
    shell:
        "python -m latentrec fit-predict --data {params.data:q}"
        " --dataset {wildcards.dataset:q} --method {wildcards.method:q} --cfg {params.cfg}"
        " --seed {wildcards.seed} --threads {threads} {params.emb} --out {params.out:q}"
        " 2> {log:q}"


rule fit_grid_point:
    input:
        data=processed("{dataset}"),
        emb=item_embeddings_input,
    output:
        predictions="results/{dataset}/{method}/seed{seed}/grid/{point}/predictions.parquet",
        valid="results/{dataset}/{method}/seed{seed}/grid/{point}/predictions_valid.parquet",
        config="results/{dataset}/{method}/seed{seed}/grid/{point}/config.yaml",
        train_log="results/{dataset}/{method}/seed{seed}/grid/{point}/train_log.json",
    log:
        "logs/fit_grid_point/{dataset}/{method}/seed{seed}/{point}.log",
    benchmark:
        "benchmarks/fit_grid_point/{dataset}/{method}/seed{seed}/{point}.tsv"
    wildcard_constraints:
        method=_alternatives(recommender_methods(config, grid=True)),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=job_mem_mb("fit_grid_point"),
        runtime=job_runtime("fit_grid_point"),
    params:
        emb=item_embeddings_arg,
        cfg=lambda w: as_arg(grid_method_config(w.method, w.point)),
        data=data_folder,
        out=out_folder,
    shell:
        "python -m latentrec fit-predict --data {params.data:q}"
        " --dataset {wildcards.dataset:q} --method {wildcards.method:q} --cfg {params.cfg}"
        " --seed {wildcards.seed} --threads {threads} {params.emb}"
        " --out {params.out:q}"
        " 2> {log:q}"


rule select_grid_point:
    input:
        data=processed("{dataset}"),
        points=lambda w: expand(
            "results/{{dataset}}/{{method}}/seed{{seed}}/grid/{point}/predictions_valid.parquet",
            point=grid_points(method_config(config, w.method)),
        ),
    output:
        predictions="results/{dataset}/{method}/seed{seed}/predictions.parquet",
        selection="results/{dataset}/{method}/seed{seed}/grid_selection.csv",
    log:
        "logs/select_grid_point/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/select_grid_point/{dataset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=_alternatives(recommender_methods(config, grid=True)),
    localrule: True
    conda:
        ENV
    params:
        points=lambda w, input: [os.path.dirname(p) for p in input.points],
        data=data_folder,
        out=out_folder,
    shell:
        "python -m latentrec select-grid --data {params.data:q} --points {params.points:q}"
        " --out {params.out:q} 2> {log:q}"

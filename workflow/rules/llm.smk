# Generative recommenders: backbone fetch, SFT (shared by BIGRec and D3), sharded constrained decoding.


scattergather:
    decode=LLM["decode_shards"],


rule fetch_model:
    output:
        directory("resources/models/{model}"),
    log:
        "logs/fetch_model/{model}.log",
    benchmark:
        "benchmarks/fetch_model/{model}.tsv"
    conda:
        ENV
    resources:
        mem_mb=job_mem_mb("fetch_model"),
        runtime=job_runtime("fetch_model"),
    params:
        spec=lambda w: LLM["models"][w.model]["spec"],
    shell:
        "python -m latentrec fetch-model --spec {params.spec:q} --out {output:q} 2> {log:q}"


# BIGRec/D3 SFT: one job per dataset and seed, or with llm.sft_grid one per grid point (LatentR3 appendix C
# searches lr over {3e-3, 3e-4, 3e-5}) and select_sft's choice on validation loss (see common.smk).


rule sft_backbone:
    input:
        data=processed("{dataset}"),
        model=f"resources/models/{LLM['backbone']}",
    output:
        model=directory(f"{SFT_OUT}/model"),
        log=f"{SFT_OUT}/train_log.json",
        curves=training_curves(
            SFT_OUT, "SFT (BIGRec, D3)", "SFT", "{point}" if SFT_POINTS else "–"
        ),
    log:
        f"logs/sft_backbone/{SFT_JOB}.log",
    benchmark:
        f"benchmarks/sft_backbone/{SFT_JOB}.tsv"
    wildcard_constraints:
        point=_alternatives(SFT_POINTS),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("sft_backbone"),
        runtime=job_runtime("sft_backbone"),
        nodes=gpu_nodes("sft_backbone"),
        gpu=job_gpus("sft_backbone"),
    params:
        cfg=lambda w: as_arg(SFT_POINTS[w.point] if SFT_POINTS else LLM["sft"]),
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("sft_backbone"),
        data=data_folder,
        out=out_folder,
        tracking=TRACKING,
    shell:
        "{params.launch} sft --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --cfg {params.cfg} --seed {wildcards.seed}"
        " --tracking {params.tracking} --out {params.out:q} 2> {log:q}"


if SFT_POINTS:

    rule select_sft:
        input:
            logs=expand(
                "results/{{dataset}}/sft/seed{{seed}}/grid/{point}/train_log.json",
                point=list(SFT_POINTS),
            ),
            models=expand(
                "results/{{dataset}}/sft/seed{{seed}}/grid/{point}/model",
                point=list(SFT_POINTS),
            ),
        output:
            "results/{dataset}/sft/seed{seed}/selected.json",
        log:
            "logs/select_sft/{dataset}/seed{seed}.log",
        benchmark:
            "benchmarks/select_sft/{dataset}/seed{seed}.tsv"
        localrule: True
        conda:
            ENV
        params:
            points=lambda w, input: [os.path.dirname(f) for f in input.logs],
        shell:
            "python -m latentrec select-sft --points {params.points:q} --out {output:q} 2> {log:q}"


rule decode_llm_shard:
    input:
        data=processed("{dataset}"),
        model=llm_model_input,
    output:
        temp("results/{dataset}/{method}/seed{seed}/shards/{scatteritem}.parquet"),
    log:
        "logs/decode_llm_shard/{dataset}/{method}/seed{seed}/{scatteritem}.log",
    benchmark:
        "benchmarks/decode_llm_shard/{dataset}/{method}/seed{seed}/{scatteritem}.tsv"
    wildcard_constraints:
        method=_alternatives(llm_methods(config)),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("decode_llm_shard"),
        runtime=job_runtime("decode_llm_shard"),
        nodes=gpu_nodes("decode_llm_shard"),
        gpu=job_gpus("decode_llm_shard"),
    params:
        cfg=lambda w: as_arg(method_config(config, w.method).get("decode", {})),
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("decode_llm_shard"),
        shard=lambda w: int(w.scatteritem.split("-of-")[0]) - 1,
        n_shards=LLM["decode_shards"],
        limit=TEST_LIMIT_ARG,
        data=data_folder,
    shell:
        "{params.launch} decode --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --cfg {params.cfg} --seed {wildcards.seed}"
        " --shard {params.shard} --num-shards {params.n_shards} {params.limit} --out {output:q} 2> {log:q}"


rule gather_llm_shards:
    input:
        gather.decode(
            "results/{{dataset}}/{{method}}/seed{{seed}}/shards/{scatteritem}.parquet"
        ),
    output:
        predictions="results/{dataset}/{method}/seed{seed}/predictions.parquet",
        config="results/{dataset}/{method}/seed{seed}/config.yaml",
    log:
        "logs/gather_llm_shards/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/gather_llm_shards/{dataset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=_alternatives(llm_methods(config)),
    localrule: True
    conda:
        ENV
    params:
        cfg=lambda w: as_arg(method_config(config, w.method)),
        out=out_folder,
    shell:
        "python -m latentrec gather --shards {input:q} --dataset {wildcards.dataset:q} --method {wildcards.method:q}"
        " --seed {wildcards.seed} --cfg {params.cfg}"
        " --out {params.out:q} 2> {log:q}"


# ---- latent reasoning (LatentR3; FLR through the same head interface) --------------------------------
# warm-up SFT of backbone + head -> LR-GRPO grid points (only the head trains) -> choice on validation.
rule latent_warmup_sft:
    input:
        data=processed("{dataset}"),
        model=lambda w: latent_init_model(w.dataset, w.recipe, w.seed),
    output:
        model=directory("results/{dataset}/latent/{recipe}/seed{seed}/warmup/model"),
        log="results/{dataset}/latent/{recipe}/seed{seed}/warmup/train_log.json",
        curves=training_curves(
            "results/{dataset}/latent/{recipe}/seed{seed}/warmup",
            "{recipe}",
            "warm-up SFT",
        ),
    log:
        "logs/latent_warmup_sft/{dataset}/{recipe}/seed{seed}.log",
    benchmark:
        "benchmarks/latent_warmup_sft/{dataset}/{recipe}/seed{seed}.tsv"
    wildcard_constraints:
        recipe=_alternatives(
            [r for r in config["llm"].get("latent", {}) if not latent_warmup_grid(r)]
        ),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("latent_warmup_sft"),
        runtime=job_runtime("latent_warmup_sft"),
        nodes=gpu_nodes("latent_warmup_sft"),
        gpu=job_gpus("latent_warmup_sft"),
    params:
        cfg=lambda w: as_arg(latent_recipe(config, w.recipe, w.dataset)),
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("latent_warmup_sft"),
        data=data_folder,
        out=out_folder,
        tracking=TRACKING,
    shell:
        "{params.launch} latent-sft --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --cfg {params.cfg} --seed {wildcards.seed}"
        " --tracking {params.tracking} --out {params.out:q} 2> {log:q}"


# A recipe whose warm-up has an SFT grid (its sft_grid, else llm.sft_grid): one job per point, then
# select_latent_warmup's choice on validation loss; its selected.json is the warm-up model downstream.
rule latent_warmup_point:
    input:
        data=processed("{dataset}"),
        model=lambda w: latent_init_model(w.dataset, w.recipe, w.seed),
    output:
        model=directory(
            "results/{dataset}/latent/{recipe}/seed{seed}/warmup/grid/{point}/model"
        ),
        log="results/{dataset}/latent/{recipe}/seed{seed}/warmup/grid/{point}/train_log.json",
        curves=training_curves(
            "results/{dataset}/latent/{recipe}/seed{seed}/warmup/grid/{point}",
            "{recipe}",
            "warm-up SFT",
            "{point}",
        ),
    log:
        "logs/latent_warmup_point/{dataset}/{recipe}/seed{seed}/{point}.log",
    benchmark:
        "benchmarks/latent_warmup_point/{dataset}/{recipe}/seed{seed}/{point}.tsv"
    wildcard_constraints:
        recipe=_alternatives(
            [r for r in config["llm"].get("latent", {}) if latent_warmup_grid(r)]
        ),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("latent_warmup_point"),
        runtime=job_runtime("latent_warmup_point"),
        nodes=gpu_nodes("latent_warmup_point"),
        gpu=job_gpus("latent_warmup_point"),
    params:
        cfg=lambda w: as_arg(latent_warmup_point_config(w.recipe, w.dataset, w.point)),
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("latent_warmup_point"),
        data=data_folder,
        out=out_folder,
        tracking=TRACKING,
    shell:
        "{params.launch} latent-sft --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --cfg {params.cfg} --seed {wildcards.seed}"
        " --tracking {params.tracking} --out {params.out:q}"
        " 2> {log:q}"


rule select_latent_warmup:
    input:
        logs=lambda w: expand(
            "results/{{dataset}}/latent/{{recipe}}/seed{{seed}}/warmup/grid/{point}/train_log.json",
            point=list(sft_grid_points(config, w.recipe)),
        ),
        models=lambda w: expand(
            "results/{{dataset}}/latent/{{recipe}}/seed{{seed}}/warmup/grid/{point}/model",
            point=list(sft_grid_points(config, w.recipe)),
        ),
    output:
        "results/{dataset}/latent/{recipe}/seed{seed}/warmup/selected.json",
    log:
        "logs/select_latent_warmup/{dataset}/{recipe}/seed{seed}.log",
    benchmark:
        "benchmarks/select_latent_warmup/{dataset}/{recipe}/seed{seed}.tsv"
    wildcard_constraints:
        recipe=_alternatives(
            [r for r in config["llm"].get("latent", {}) if latent_warmup_grid(r)]
        ),
    localrule: True
    conda:
        ENV
    params:
        points=lambda w, input: [os.path.dirname(f) for f in input.logs],
    shell:
        "python -m latentrec select-sft --points {params.points:q} --out {output:q} 2> {log:q}"


rule latent_rl_point:
    input:
        data=processed("{dataset}"),
        model=lambda w: latent_warmup_model(w.dataset, w.recipe, w.seed),
    output:
        model=directory("results/{dataset}/latent/{recipe}/seed{seed}/rl/{point}/model"),
        log="results/{dataset}/latent/{recipe}/seed{seed}/rl/{point}/rl_log.json",
        curves=training_curves(
            "results/{dataset}/latent/{recipe}/seed{seed}/rl/{point}",
            "{recipe}",
            "RL",
            "{point}",
        ),
    log:
        "logs/latent_rl_point/{dataset}/{recipe}/seed{seed}/{point}.log",
    benchmark:
        "benchmarks/latent_rl_point/{dataset}/{recipe}/seed{seed}/{point}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("latent_rl_point"),
        runtime=job_runtime("latent_rl_point"),
        nodes=gpu_nodes("latent_rl_point"),
        gpu=job_gpus("latent_rl_point"),
    params:
        cfg=lambda w: as_arg(latent_rl_points(config, w.recipe)[w.point]),
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("latent_rl_point"),
        data=data_folder,
        out=out_folder,
        tracking=TRACKING,
    shell:
        "{params.launch} latent-rl --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --cfg {params.cfg} --seed {wildcards.seed}"
        " --tracking {params.tracking} --out {params.out:q}"
        " 2> {log:q}"


rule select_latent_rl:
    input:
        lambda w: expand(
            "results/{{dataset}}/latent/{{recipe}}/seed{{seed}}/rl/{point}/rl_log.json",
            point=list(latent_rl_points(config, w.recipe)),
        ),
    output:
        "results/{dataset}/latent/{recipe}/seed{seed}/selected.json",
    log:
        "logs/select_latent_rl/{dataset}/{recipe}/seed{seed}.log",
    benchmark:
        "benchmarks/select_latent_rl/{dataset}/{recipe}/seed{seed}.tsv"
    localrule: True
    conda:
        ENV
    params:
        points=lambda w, input: [os.path.dirname(f) for f in input],
    shell:
        "python -m latentrec select-latent --points {params.points:q} --out {output:q} 2> {log:q}"


# ---- FLR analyses that need a model: factors of test users (Figures 4, 6) and decode timing (Figure 9)
rule flr_factors:
    input:
        data=processed("{dataset}"),
        model=llm_model_input,
    output:
        "results/{dataset}/{method}/seed{seed}/flr_factors.npz",
    log:
        "logs/flr_factors/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/flr_factors/{dataset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=_alternatives(llm_methods(config)),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("flr_factors"),
        runtime=job_runtime("flr_factors"),
        nodes=gpu_nodes("flr_factors"),
        gpu=job_gpus("flr_factors"),
    params:
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("flr_factors"),
        rows=FLR_REPORT.get("factors", {}).get("rows", 100),
        data=data_folder,
    shell:
        "{params.launch} flr-factors --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --rows {params.rows:q} --threads {threads} --out {output:q} 2> {log:q}"


rule time_inference:
    input:
        data=processed("{dataset}"),
        model=llm_model_input,
    output:
        "results/{dataset}/{method}/seed{seed}/inference_time.json",
    log:
        "logs/time_inference/{dataset}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/time_inference/{dataset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=_alternatives(llm_methods(config)),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=job_mem_mb("time_inference"),
        runtime=job_runtime("time_inference"),
        nodes=gpu_nodes("time_inference"),
        gpu=job_gpus("time_inference"),
    params:
        cfg=lambda w: as_arg(flr_timing_decode(w.method)),
        domain=lambda w: shlex.quote(dataset_config(config, w.dataset)["domain"]),
        launch=launcher("time_inference"),
        rows=FLR_REPORT.get("timing", {}).get("rows", 100),
        repeats=FLR_REPORT.get("timing", {}).get("repeats", 3),
        data=data_folder,
    shell:
        "{params.launch} time-decode --data {params.data:q} --model {input.model:q}"
        " --domain {params.domain} --cfg {params.cfg} --rows {params.rows:q} --repeats {params.repeats:q}"
        " --threads {threads} --out {output:q} 2> {log:q}"

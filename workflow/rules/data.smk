# Data stage: download (or synthesize) -> parse -> window/k-core -> samples -> 8:1:1 split -> stats.
from latentrec.data.split_files import split_input_files


rule synthesize_dataset:
    output:
        reviews="resources/synthetic/{dataset}_5.json.gz",
        meta="resources/synthetic/meta_{dataset}.json.gz",
    log:
        "logs/synthesize_dataset/{dataset}.log",
    benchmark:
        "benchmarks/synthesize_dataset/{dataset}.tsv"
    conda:
        ENV
    resources:
        mem_mb=job_mem_mb("synthesize_dataset"),
        runtime=job_runtime("synthesize_dataset"),
    params:
        s=lambda w: dataset_config(config, w.dataset)["synthetic"],
    shell:
        "python -m latentrec synthesize --reviews {output.reviews:q} --meta {output.meta:q}"
        " --n-users {params.s[n_users]} --n-items {params.s[n_items]}"
        " --n-genres {params.s[n_genres]} --seed {params.s[seed]}"
        " --start {params.s[start]} --end {params.s[end]} 2> {log:q}"


rule download_amazon2018:
    output:
        "resources/amazon2018/{file}",
    log:
        "logs/download_amazon2018/{file}.log",
    benchmark:
        "benchmarks/download_amazon2018/{file}.tsv"
    wildcard_constraints:
        file=r"(meta_)?[A-Za-z_]+?(_5)?\.json\.gz",
    conda:
        ENV
    resources:
        mem_mb=job_mem_mb("download_amazon2018"),
        runtime=job_runtime("download_amazon2018"),
    params:
        url=download_url,
        offline="--offline" if config["download"].get("offline") else "",
        retries=config["download"].get("retries", 5),
        min_rate=config["download"].get("min_rate", 1024),
        stall_window=config["download"].get("stall_window_s", 60),
    shell:
        "python -m latentrec download --url {params.url:q} --out {output:q} "
        "--retries {params.retries} {params.offline} --min-rate {params.min_rate}"
        " --stall-window {params.stall_window} 2> {log:q}"


rule process_raw_dataset:
    input:
        reviews=lambda w: raw_files(w.dataset)["reviews"],
        meta=lambda w: raw_files(w.dataset)["meta"],
    output:
        processed("{dataset}"),
        stats="results/{dataset}/data/stats.json",
        csv=directory("results/{dataset}/data/csv"),
    log:
        "logs/process_raw_dataset/{dataset}.log",
    benchmark:
        "benchmarks/process_raw_dataset/{dataset}.tsv"
    wildcard_constraints:
        dataset=_alternatives(datasets_with_source("raw", "synthetic")),
    conda:
        ENV
    resources:
        mem_mb=job_mem_mb("process_raw_dataset"),
        runtime=job_runtime("process_raw_dataset"),
    params:
        cfg=lambda w: as_arg(processing_config(config, w.dataset)),
        category=lambda w: dataset_config(config, w.dataset).get("category", w.dataset),
        out=out_folder,
    shell:
        "python -m latentrec process --reviews {input.reviews:q} --meta {input.meta:q}"
        " --category {params.category:q} --cfg {params.cfg} --out {params.out:q} 2> {log:q}"


rule import_processed_dataset:
    input:
        lambda w: split_input_files(dataset_config(config, w.dataset)["folder"]),
    output:
        processed("{dataset}"),
        stats="results/{dataset}/data/stats.json",
    log:
        "logs/import_processed_dataset/{dataset}.log",
    benchmark:
        "benchmarks/import_processed_dataset/{dataset}.tsv"
    wildcard_constraints:
        dataset=_alternatives(datasets_with_source("processed")),
    conda:
        ENV
    resources:
        mem_mb=job_mem_mb("import_processed_dataset"),
        runtime=job_runtime("import_processed_dataset"),
    params:
        folder=lambda w: dataset_config(config, w.dataset)["folder"],
        out=out_folder,
    shell:
        "python -m latentrec import-csv --src {params.folder:q} --out {params.out:q}"
        " 2> {log:q}"

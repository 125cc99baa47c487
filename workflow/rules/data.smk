# Data stage: download (or synthesize) -> parse -> window/k-core -> samples -> 8:1:1 split -> stats.


rule synthesize_dataset:
    output:
        reviews="resources/synthetic/{dataset}_5.json.gz",
        meta="resources/synthetic/meta_{dataset}.json.gz",
    params:
        s=lambda w: dataset_config(config, w.dataset)["synthetic"],
    log:
        "logs/synthesize_dataset/{dataset}.log",
    shell:
        "python -m latentrec synthesize --reviews {output.reviews} --meta {output.meta}"
        " --n-users {params.s[n_users]} --n-items {params.s[n_items]}"
        " --n-genres {params.s[n_genres]} --seed {params.s[seed]}"
        " --start {params.s[start]} --end {params.s[end]} 2> {log}"


def _download_url(w):
    from latentrec.data.download import amazon2018_urls

    kind = "meta" if w.file.startswith("meta_") else "reviews"
    stem = w.file.removesuffix(".json.gz")
    category = stem.removeprefix("meta_").removesuffix("_5")
    review_file = "5core" if stem.endswith("_5") else "full"
    urls = amazon2018_urls(category, review_file, config["download"]["base_url"])
    return urls[kind]


rule download_amazon2018:
    output:
        "resources/amazon2018/{file}",
    wildcard_constraints:
        file=r"(meta_)?[A-Za-z_]+?(_5)?\.json\.gz",
    params:
        url=_download_url,
        offline="--offline" if config["download"].get("offline") else "",
        retries=config["download"].get("retries", 5),
    log:
        "logs/download_amazon2018/{file}.log",
    benchmark:
        "benchmarks/download_amazon2018/{file}.tsv"
    shell:
        "python -m latentrec download --url {params.url:q} --out {output} "
        "--retries {params.retries} {params.offline} 2> {log}"


rule process_raw_dataset:
    input:
        reviews=lambda w: raw_files(w.dataset)["reviews"],
        meta=lambda w: raw_files(w.dataset)["meta"],
    output:
        processed("{dataset}"),
        stats="results/{dataset}/data/stats.json",
        csv=directory("results/{dataset}/data/csv"),
    wildcard_constraints:
        dataset=_alternatives(datasets_with_source("raw", "synthetic")),
    params:
        cfg=lambda w: as_arg(processing_config(config, w.dataset)),
        category=lambda w: dataset_config(config, w.dataset).get("category", w.dataset),
    log:
        "logs/process_raw_dataset/{dataset}.log",
    benchmark:
        "benchmarks/process_raw_dataset/{dataset}.tsv"
    shell:
        "python -m latentrec process --reviews {input.reviews} --meta {input.meta}"
        " --category {params.category} --cfg {params.cfg} --out results/{wildcards.dataset}/data 2> {log}"


rule import_processed_dataset:
    input:
        lambda w: dataset_config(config, w.dataset)["folder"],
    output:
        processed("{dataset}"),
        stats="results/{dataset}/data/stats.json",
    wildcard_constraints:
        dataset=_alternatives(datasets_with_source("processed")),
    log:
        "logs/import_processed_dataset/{dataset}.log",
    shell:
        "python -m latentrec import-csv --src {input} --out results/{wildcards.dataset}/data 2> {log}"

# latentrec: LatentR3 and FLR reproduced from the raw Amazon 2018 dumps to the papers' tables.
# Usage: see README.md. Logic lives in workflow/rules/common.smk; rules only wire files together.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True

# latentrec: LatentR3 and FLR reproduced from the raw Amazon 2018 dumps to the papers' tables.
# Usage: see README.md. Logic lives in workflow/rules/common.smk; rules only wire files together.
import sys

from snakemake.utils import min_version, validate

sys.path.insert(
    0, f"{workflow.basedir}/src"
)  # the package of this checkout, installed or not

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/llm.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),

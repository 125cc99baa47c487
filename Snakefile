# latentrec: LatentR3 and FLR reproduced from the raw Amazon 2018 dumps to the papers' tables.
# Usage: see README.md. Rules only wire files together: config access and input functions are in
# workflow/rules/common.smk, what each job asks for in src/latentrec/rule_resources.py.
import sys

from snakemake.utils import min_version

sys.path.insert(
    0, f"{workflow.basedir}/src"
)  # the package of this checkout, installed or not

from latentrec.config_checks import check_config_files, validate_schema
from latentrec.recovery import clear_stale_locks

min_version("9.0")


configfile: "config/config.yaml"


# Before any job: no key written twice in a config file (YAML keeps the last silently), then the
# schema (types, ranges, unknown keys, safe names); common.smk adds validate_config (meaning).
check_config_files(workflow.configfiles)
validate_schema(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

# After a crash the same command continues: profiles/default sets rerun-incomplete, and a lock left
# by a dead run is removed here, before Snakemake checks it (a live run's lock stays).
if workflow.is_main_process and not workflow.dryrun:
    _recovered = clear_stale_locks()
    if _recovered:
        print(f"[latentrec] {_recovered}", file=sys.stderr)


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
    localrule: True


# Per-rule wall times of this run (from benchmarks/) and where its tables and figures are.
onsuccess:
    from latentrec.run_summary import run_summary

    print(
        run_summary(
            "benchmarks",
            "results/tables",
            out="benchmarks/summary.md",
            not_drawn=NOT_DRAWN,
        )
    )
    print("(also in benchmarks/summary.md)")

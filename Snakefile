# SAL-T pipeline: generate or download jets -> sorted HDF5 shards -> train -> evaluate/benchmark -> report.
# The Snakefile only validates the config, includes the stage files and names the final targets;
# the science lives in the `salt` package, which every rule calls through one `salt <stage>` command.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),

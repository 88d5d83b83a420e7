# SAL-T pipeline: generate or download jets -> sorted HDF5 shards -> train -> evaluate/benchmark -> report.
# The Snakefile only validates the config, includes the stage files and names the final targets;
# the science lives in the `salt` package, which every rule calls through one `salt <stage>` command.
from snakemake.utils import min_version, validate

from salt.configcheck import check_keys

min_version("9.0")


configfile: "config.yaml"


# `--config seeds=[1,2,3]` arrives as strings (Snakemake reads command-line lists with YAML's
# BaseLoader); accept it rather than make users write a config file for a list of trials.
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if str(s).isdigit() else s for s in config["seeds"]]


check_keys(config, "workflow/schemas/config.schema.yaml")  # a misspelled key: one line, not the schema
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

# ckptsweep: how pre-training and fine-tuning interact (AMURO & CHAR and friends).
# Thin on purpose: the grid and input functions live in workflow/rules/common.smk, the
# work in the ckptsweep package. Run `snakemake -n` to see the pending jobs per rule.
from snakemake.utils import min_version

min_version("9.20")


# A --configfile given on the command line *replaces* this default instead of being
# deep-merged over it, so a study config never silently inherits another's datasets.
if not workflow.overwrite_configfiles:

    configfile: "config/demo.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/advisor.smk"


report: "workflow/report/workflow.rst"


onstart:
    if GUARD_STOP and not STUDY.confirm_rerun:
        raise WorkflowError(GUARD)


rule all:
    default_target: True
    input:
        get_final_outputs(),
        get_attribution_targets(),
    localrule: True

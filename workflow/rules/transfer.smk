# Cross-stage transfer (config block `transfer`, Fan et al. 2026): do the population's
# accuracy and confidence rankings survive SFT? Its members' pre- and post-SFT predictions
# come from the ordinary finetune and evaluate rules; these two light rules read them
# (input functions in common.smk).
from ckptsweep.analysis.names import TRANSFER_FIGURES, TRANSFER_TABLES


rule transfer_tables:
    input:
        predictions=get_transfer_predictions,
        gold=get_transfer_gold_files,
    output:
        summary="results/tables/transfer_summary.json",
        csv=expand("results/tables/{name}.csv", name=TRANSFER_TABLES),
        html=[
            report(
                f"results/tables/{name}.html",
                caption="../report/transfer_tables.rst",
                category="Transfer",
                labels={"table": name},
            )
            for name in TRANSFER_TABLES
        ],
    log:
        "logs/transfer_tables/transfer_tables.log",
    benchmark:
        "benchmarks/transfer_tables/transfer_tables.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=get_transfer_spec,
        gold=get_transfer_gold,
    script:
        "../scripts/transfer_tables.py"


rule transfer_figures:
    input:
        summary="results/tables/transfer_summary.json",
        tables=expand("results/tables/{name}.csv", name=TRANSFER_TABLES),
    output:
        figures=[
            report(
                f"results/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Transfer",
                labels={"figure": name},
            )
            for name in TRANSFER_FIGURES
        ],
        svg=expand("results/figures/{name}.svg", name=TRANSFER_FIGURES),
    log:
        "logs/transfer_figures/transfer_figures.log",
    benchmark:
        "benchmarks/transfer_figures/transfer_figures.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/transfer_figures.py"

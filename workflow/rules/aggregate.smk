# Aggregation: the tidy scores table, then every table and figure, all computed from it.
from ckptsweep.analysis.names import FIGURE_NAMES, TABLE_NAMES

# Outputs stay static: the ablation's table and figure exist only with its config block.
TABLES = [*TABLE_NAMES, "gpu_hours", *([] if ABLATION is None else ["ablation"])]
FIGURES = [*FIGURE_NAMES, "gpu_hours", *([] if ABLATION is None else ["ablation"])]


rule aggregate:
    input:
        predictions=get_all_predictions,
        manifests=get_manifests,
    output:
        scores="results/scores.parquet",
        examples="results/examples.parquet",
    log:
        "logs/aggregate/aggregate.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        runs=get_runs_spec,
        seed=get_analysis_seed,
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        scores="results/scores.parquet",
        examples="results/examples.parquet",
        ablation=get_ablation_predictions,
    output:
        summary="results/tables/summary.json",
        csv=expand("results/tables/{name}.csv", name=TABLES),
        html=[
            report(
                f"results/tables/{name}.html",
                caption="../report/tables.rst",
                category="Tables",
                labels={"table": name},
            )
            for name in TABLES
        ],
    log:
        "logs/tables/tables.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        analysis=get_analysis_spec,
        # Read when the rule runs, after every heavy job (all upstream of the scores):
        # the GPU-hours table covers the benchmark files that exist then.
        benchmarks="benchmarks",
    script:
        "../scripts/tables.py"


rule figures:
    input:
        summary="results/tables/summary.json",
        ablation=get_ablation_table,
    output:
        figures=[
            report(
                f"results/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
                labels={"figure": name},
            )
            for name in FIGURES
        ],
        svg=expand("results/figures/{name}.svg", name=FIGURES),
    log:
        "logs/figures/figures.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figures.py"

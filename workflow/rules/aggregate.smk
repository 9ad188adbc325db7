# Aggregation: the tidy scores table, then every table and figure, all computed from it.
from ckptsweep.figures import FIGURE_NAMES
from ckptsweep.tables import TABLE_NAMES


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
        seed=config["analysis"].get("seed", 0),
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        scores="results/scores.parquet",
        examples="results/examples.parquet",
    output:
        summary="results/tables/summary.json",
        csv=expand("results/tables/{name}.csv", name=TABLE_NAMES),
        html=[
            report(
                f"results/tables/{name}.html",
                caption="../report/tables.rst",
                category="Tables",
                labels={"table": name},
            )
            for name in TABLE_NAMES
        ],
    log:
        "logs/tables/tables.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        analysis=get_analysis_spec,
    script:
        "../scripts/tables.py"


rule figures:
    input:
        summary="results/tables/summary.json",
    output:
        figures=[
            report(
                f"results/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
                labels={"figure": name},
            )
            for name in FIGURE_NAMES
        ],
        svg=expand("results/figures/{name}.svg", name=FIGURE_NAMES),
    log:
        "logs/figures/figures.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figures.py"

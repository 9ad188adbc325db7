# Aggregation: the tidy scores table, then every table and figure, all computed from it.


rule aggregate:
    input:
        predictions=get_all_predictions,
        manifests=get_manifests,
    output:
        scores="results/scores.parquet",
        examples="results/examples.parquet",
    params:
        runs=get_runs_spec,
        seed=config["analysis"].get("seed", 0),
    log:
        "logs/aggregate/aggregate.log",
    localrule: True
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        scores="results/scores.parquet",
        examples="results/examples.parquet",
    output:
        summary="results/tables/summary.json",
    params:
        analysis=get_analysis_spec,
    log:
        "logs/tables/tables.log",
    localrule: True
    script:
        "../scripts/tables.py"


rule figures:
    input:
        scores="results/scores.parquet",
        summary="results/tables/summary.json",
    output:
        done=touch("results/figures/.done"),
    params:
        analysis=get_analysis_spec,
    log:
        "logs/figures/figures.log",
    localrule: True
    script:
        "../scripts/figures.py"

# The checkpoint advisor (config block `advisor`; README "Which checkpoint to fine-tune"):
# which pre-training checkpoint to fine-tune, predicted cheaply and checked against the
# full grid. The proxy fine-tune is a predictor with jobs of its own (one per checkpoint,
# benchmarked like every heavy job); the other predictors come from the grid's base
# evaluations. Retrospective mode: `advise` on the finished grid. Adaptive mode: the proxy
# on every checkpoint, then the checkpoint `adaptive_select` picks the top k and the last,
# whose full fine-tunes and evaluations (the ordinary rules) `adaptive_advice` asks for.
# Input functions and specs: ckptsweep.study.advisor, through common.smk.
from ckptsweep.analysis.advisor_settings import ADVISOR_FIGURES, ADVISOR_TABLES


rule proxy:
    input:
        unpack(get_proxy_input),
    output:
        predictions=directory("results/advisor/proxy/{model}/{step}"),
    log:
        "logs/proxy/{model}/{step}.log",
    benchmark:
        "benchmarks/proxy/{model}/{step}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: THREADS
    resources:
        # The evaluation's batch policy, for the dev slices (a resource, as in evaluate).
        eval_batch=get_eval_batch,
    params:
        spec=get_proxy_spec,
    shell:
        "ckptsweep proxy --spec {params.spec:q} --manifest {input.manifest:q}"
        " --threads {threads} --batch-size {resources.eval_batch}"
        " --out {output.predictions:q} > {log:q} 2>&1"


# The proxy predictions as a scores-schema table (dev sets `{task}__dev`, role id).
rule proxy_scores:
    input:
        proxy=get_proxy_folders,
        manifests=get_proxy_manifests,
    output:
        scores="results/advisor/proxy_scores.parquet",
    log:
        "logs/proxy_scores/proxy_scores.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        runs=get_proxy_runs,
        seed=get_analysis_seed,
    script:
        "../scripts/proxy_scores.py"


# Generation sets save no log-probabilities: a base-only job per checkpoint scores the
# reference's bits per byte in the evaluation's prompts (advisor.bpb).
rule bpb:
    input:
        unpack(get_bpb_input),
    output:
        bpb="results/advisor/bpb/{model}/{step}.parquet",
    log:
        "logs/bpb/{model}/{step}.log",
    benchmark:
        "benchmarks/bpb/{model}/{step}.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: THREADS
    resources:
        eval_batch=get_eval_batch,
    params:
        spec=get_bpb_spec,
    shell:
        "ckptsweep bpb --spec {params.spec:q} --manifest {input.manifest:q}"
        " --threads {threads} --batch-size {resources.eval_batch}"
        " --out {output.bpb:q} > {log:q} 2>&1"


rule advise:
    input:
        scores="results/scores.parquet",
        examples="results/examples.parquet",
        # The base models' label log-probabilities are predictors too.
        predictions=get_all_predictions,
        proxy=get_advisor_proxy,
        bpb=get_advisor_bpb,
        transfer=get_advisor_transfer,
        gold=get_advisor_gold_files,
    output:
        csv=expand("results/tables/{name}.csv", name=ADVISOR_TABLES),
        html=[
            report(
                f"results/tables/{name}.html",
                caption="../report/advisor_tables.rst",
                category="Advisor",
                labels={"table": name},
            )
            for name in ADVISOR_TABLES
        ],
        figures=[
            report(
                f"results/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Advisor",
                labels={"figure": name},
            )
            for name in ADVISOR_FIGURES
        ],
        svg=expand("results/figures/{name}.svg", name=ADVISOR_FIGURES),
    log:
        "logs/advise/advise.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=get_advisor_spec,
        gold=get_advisor_gold,
        # Read when the rule runs, after every fine-tune, evaluation and proxy job.
        benchmarks="benchmarks",
    script:
        "../scripts/advise.py"


# Adaptive mode, phase one ends here: the proxy's ranking picks the checkpoints to
# fine-tune (top k besides the last, and the last). Snakemake re-evaluates the DAG after
# it, and the jobs of the picked checkpoints appear.
checkpoint adaptive_select:
    input:
        proxy="results/advisor/proxy_scores.parquet",
    output:
        selection="results/advisor/adaptive/selection.json",
    log:
        "logs/adaptive_select/adaptive_select.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=get_adaptive_spec,
    script:
        "../scripts/adaptive_select.py"


rule adaptive_advice:
    input:
        selection="results/advisor/adaptive/selection.json",
        last=get_adaptive_last,
        selected=get_adaptive_selected,
        manifests=get_manifests,
    output:
        json="results/advisor/adaptive/recommendation.json",
        csv="results/advisor/adaptive/recommendation.csv",
        html=report(
            "results/advisor/adaptive/recommendation.html",
            caption="../report/adaptive.rst",
            category="Advisor",
            labels={"table": "adaptive recommendation"},
        ),
    log:
        "logs/adaptive_advice/adaptive_advice.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        runs=get_runs_spec,
        spec=get_advisor_spec,
        adaptive=get_adaptive_spec,
        seed=get_analysis_seed,
        # This run's proxy, fine-tune and evaluation jobs: the GPU-hours spent.
        benchmarks="benchmarks",
    script:
        "../scripts/adaptive_report.py"

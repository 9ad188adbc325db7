# Evaluation: one job per checkpoint, covering the base model and every fine-tune of it
# on all their eval sets, formats and shot counts (one predictions file per variant in
# the job's folder). Each model is loaded once, jobs stay minutes long on a GPU, and a
# scheduler sees one job per checkpoint instead of one per variant; a re-run after a new
# fine-tune is cheap with the prediction cache (evaluation.cache_dir).


rule evaluate:
    input:
        unpack(get_eval_input),
    output:
        predictions=directory("results/predictions/{model}/{step}"),
    log:
        "logs/evaluate/{model}/{step}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{step}.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: THREADS
    resources:
        # The batch policy (evaluation.batch_size, default auto): how the job runs, not
        # what it computes, so a resource, not a param: changing it re-runs nothing.
        eval_batch=get_eval_batch,
    params:
        spec=get_eval_spec,
        # Predictions of unchanged variants and sets come back from it when a grown
        # study re-runs this checkpoint's job (a new fine-tune, a new eval set).
        cache=PREDICTION_CACHE,
    shell:
        "ckptsweep evaluate --spec {params.spec:q} --manifest {input.manifest:q}"
        " --threads {threads} --batch-size {resources.eval_batch}"
        " --default-cache-dir {params.cache:q}"
        " --out {output.predictions:q} > {log:q} 2>&1"


# The prediction-method ablation (the paper's Table 2; config analysis.ablation): one job
# per model, loading the base and each in-domain fine-tune of the final checkpoint once
# and scoring the classification sets with every method.
rule ablation:
    input:
        unpack(get_ablation_input),
    output:
        predictions="results/ablation/{model}.parquet",
    log:
        "logs/ablation/{model}.log",
    benchmark:
        "benchmarks/ablation/{model}.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: THREADS
    resources:
        # The batch policy (evaluation.batch_size, default auto): how the job runs, not
        # what it computes, so a resource, not a param: changing it re-runs nothing.
        eval_batch=get_eval_batch,
    params:
        spec=get_ablation_spec,
        cache=PREDICTION_CACHE,
    shell:
        "ckptsweep ablation --spec {params.spec:q} --manifest {input.manifest:q}"
        " --threads {threads} --batch-size {resources.eval_batch}"
        " --default-cache-dir {params.cache:q}"
        " --out {output.predictions:q} > {log:q} 2>&1"

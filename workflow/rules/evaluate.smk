# Evaluation: one job per model variant, covering every eval set, format and shot count,
# so each model is loaded once.


rule evaluate:
    input:
        unpack(get_eval_input),
    output:
        predictions="results/predictions/{model}/{step}/{variant}.parquet",
    log:
        "logs/evaluate/{model}/{step}/{variant}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{step}/{variant}.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: THREADS
    params:
        spec=get_eval_spec,
        model=lambda w, input: (
            f"--manifest {input.manifest} --step {w.step}"
            if w.variant == "base"
            else f"--model {input.model}"
        ),
    shell:
        "ckptsweep evaluate --spec {params.spec:q} {params.model} --threads {threads}"
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
    params:
        spec=get_ablation_spec,
    shell:
        "ckptsweep ablation --spec {params.spec:q} --manifest {input.manifest:q}"
        " --threads {threads} --out {output.predictions:q} > {log:q} 2>&1"

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

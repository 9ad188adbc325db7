# Fine-tuning: one job per checkpoint x training dataset x learning rate x seed.


rule finetune:
    input:
        unpack(get_finetune_input),
    output:
        model=directory("results/models/{model}/{step}/{ft}"),
    log:
        "logs/finetune/{model}/{step}/{ft}.log",
    benchmark:
        "benchmarks/finetune/{model}/{step}/{ft}.tsv"
    threads: THREADS
    params:
        spec=get_finetune_spec,
    shell:
        "ckptsweep finetune --spec {params.spec:q} --manifest {input.manifest:q}"
        " --step {wildcards.step} --train {input.train:q} --threads {threads}"
        " --out {output.model:q} > {log:q} 2>&1"

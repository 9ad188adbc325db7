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
    conda:
        "../../envs/train.yaml"
    threads: THREADS
    resources:
        # Snakemake's attempt (1, 2, ... with retries): a retry after an out-of-memory
        # failure halves the micro-batch and doubles accumulation (same effective batch).
        attempt=get_attempt,
        # The fine-tune's `gpus` setting (default 1). Above 1 the command below re-launches
        # itself as `torchrun --standalone --nproc-per-node <gpus> -m ckptsweep.cli
        # finetune ...` (logged), the model sharded over the GPUs (ckptsweep.train.distributed:
        # FSDP2, ZeRO-3-like). A profile's set-resources `finetune: gpu:` overrides this.
        gpu=get_finetune_gpus,
        # Host memory: the fine-tune's `mem_mb` setting per process x its GPUs, doubled
        # on each retry (a profile's set-resources `finetune: mem_mb:` overrides this).
        mem_mb=get_finetune_mem_mb,
    params:
        spec=get_finetune_spec,
        # The state survives a failed or pre-empted job (it is not an output); the job
        # removes it when it finishes.
        resume=get_resume_dir,
        compile_cache="resources/cache/torchinductor",
    shell:
        "ckptsweep finetune --spec {params.spec:q} --manifest {input.manifest:q}"
        " --step {wildcards.step} --train {input.train:q} --threads {threads}"
        " --resume-dir {params.resume:q} --attempt {resources.attempt}"
        " --compile-cache {params.compile_cache:q}"
        " --out {output.model:q} > {log:q} 2>&1"

# Models: pre-train the tiny models of the embedded default, then write the checkpoint
# manifest (step, tokens, revision, source) that every later job loads through.


rule pretrain:
    input:
        corpus="resources/world/corpus.jsonl",
        lines="resources/world/tokenizer_lines.txt",
    output:
        models=directory("resources/pretrained/{model}"),
    params:
        spec=get_pretrain_spec,
    threads: workflow.cores
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        "benchmarks/pretrain/{model}.tsv"
    shell:
        "ckptsweep pretrain --spec {params.spec:q} --corpus {input.corpus:q}"
        " --lines {input.lines:q} --threads {threads} --out {output.models:q} > {log:q} 2>&1"


rule checkpoints:
    input:
        unpack(get_checkpoint_source),
    output:
        manifest="resources/checkpoints/{model}.tsv",
    params:
        steps=lambda w: study.steps(config, w.model),
    log:
        "logs/checkpoints/{model}.log",
    shell:
        "ckptsweep checkpoints --pretrained {input.pretrained:q} --steps {params.steps}"
        " --out {output.manifest:q} > {log:q} 2>&1"

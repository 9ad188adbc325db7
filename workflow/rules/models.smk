# Models: pre-train the tiny models of the embedded default, then write the checkpoint
# manifest (step, tokens, revision, source) that every later job loads through.


rule pretrain:
    input:
        corpus="resources/world/corpus.jsonl",
        lines="resources/world/tokenizer_lines.txt",
        info="resources/world/world.json",
    output:
        models=directory("resources/pretrained/{model}"),
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        "benchmarks/pretrain/{model}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 4  # scaled down to --cores; a tiny model gains little beyond 4
    params:
        spec=get_pretrain_spec,
    shell:
        "ckptsweep pretrain --spec {params.spec:q} --corpus {input.corpus:q}"
        " --lines {input.lines:q} --world-info {input.info:q} --threads {threads} --out {output.models:q} > {log:q} 2>&1"


rule checkpoints:
    input:
        unpack(get_checkpoint_source),
    output:
        manifest="resources/checkpoints/{model}.tsv",
    log:
        "logs/checkpoints/{model}.log",
    conda:
        "../../envs/train.yaml"
    params:
        steps=lambda w: study.steps(config, w.model),
    shell:
        "ckptsweep checkpoints --pretrained {input.pretrained:q} --steps {params.steps}"
        " --out {output.manifest:q} > {log:q} 2>&1"

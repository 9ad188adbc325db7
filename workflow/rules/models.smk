# Models: pre-train the tiny models of the embedded default, or resolve a hub model's
# steps to branches pinned to commits; write the checkpoint manifest (step, tokens,
# revision, source) that every later job loads through; fetch hub weights into HF_HOME.


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
    # models.<m>.threads, else the top-level threads: a tiny model gains little from a
    # second thread, except the one whose pre-training everything else waits for.
    threads: get_pretrain_threads
    params:
        spec=get_pretrain_spec,
    shell:
        "ckptsweep pretrain --spec {params.spec:q} --corpus {input.corpus:q}"
        " --lines {input.lines:q} --world-info {input.info:q} --threads {threads} --out {output.models:q} > {log:q} 2>&1"


# A local rule: resolving hub branches needs the network, which only the submitting node
# is sure to have; for tiny local models it only reads the pre-training folder.
rule checkpoints:
    input:
        unpack(get_checkpoint_source),
    output:
        manifest="resources/checkpoints/{model}.tsv",
    log:
        "logs/checkpoints/{model}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        spec=get_checkpoint_spec,
        pretrained=get_pretrained_folder,
    shell:
        "ckptsweep checkpoints --spec {params.spec:q} --pretrained {params.pretrained:q}"
        " --out {output.manifest:q} > {log:q} 2>&1"


# Hub models only: download every pinned commit of the manifest into HF_HOME on the
# submitting node; compute jobs then load offline (HF_HUB_OFFLINE=1).
rule prefetch_model:
    input:
        manifest="resources/checkpoints/{model}.tsv",
    output:
        fetched="resources/prefetch/{model}.json",
    log:
        "logs/prefetch_model/{model}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        trust_remote_code=get_trust_remote_code,
    shell:
        "ckptsweep prefetch-model --manifest {input.manifest:q}"
        " --trust-remote-code {params.trust_remote_code} --out {output.fetched:q} > {log:q} 2>&1"

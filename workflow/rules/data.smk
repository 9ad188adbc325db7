# Data: the synthetic world (corpus + raw task data in the real datasets' schemas), then
# one canonical, sub-sampled copy of every dataset that every later job reads.


rule world:
    output:
        corpus="resources/world/corpus.jsonl",
        lines="resources/world/tokenizer_lines.txt",
        raw=directory("resources/world/raw"),
        info="resources/world/world.json",
    log:
        "logs/world/world.log",
    benchmark:
        "benchmarks/world/world.tsv"
    conda:
        "../../envs/train.yaml"
    params:
        spec=get_world_spec,
    shell:
        "ckptsweep world --spec {params.spec:q} --out resources/world > {log:q} 2>&1"


rule prepare_data:
    input:
        raw=get_raw_data,
    output:
        train="resources/data/{dataset}/train.jsonl",
        test="resources/data/{dataset}/test.jsonl",
    log:
        "logs/prepare_data/{dataset}.log",
    conda:
        "../../envs/train.yaml"
    params:
        spec=get_dataset_spec,
    shell:
        "ckptsweep prepare --spec {params.spec:q} --raw {input.raw:q}"
        " --out resources/data/{wildcards.dataset} > {log:q} 2>&1"

# Data: the synthetic world (corpus + raw task data in the real datasets' schemas); a
# snapshot of every dataset's splits in its hub schema (save_to_disk), fetched from the hub
# on the submitting node or taken from the world's raw files; then one canonical,
# sub-sampled copy of every dataset that every later job reads. Hub and world data take
# the same prefetch -> snapshot -> prepare path (ckptsweep.data.snapshots, ckptsweep.data.adapters).


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


# The world's raw data (every dataset it generates, in hub schemas) as snapshots, through
# the same writer as the hub prefetch: one job, so the demo pays the `datasets` import once.
rule snapshot_world:
    input:
        raw="resources/world/raw",
    output:
        snapshots=directory("resources/world/snapshots"),
    log:
        "logs/snapshot_world/snapshot_world.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        spec=jsonarg({"source": "world"}),
    shell:
        "ckptsweep prefetch --spec {params.spec:q} --raw {input.raw:q}"
        " --out {output.snapshots:q} > {log:q} 2>&1"


# The only data rule that may reach the hub: a local rule (the submitting node has the
# network, compute nodes need not). Hub downloads land in HF_HOME; the snapshot is the
# split(s) the study uses, stored with save_to_disk.
rule prefetch:
    output:
        snapshot=directory("resources/snapshots/{dataset}"),
    log:
        "logs/prefetch/{dataset}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        spec=get_prefetch_spec,
    shell:
        "ckptsweep prefetch --spec {params.spec:q} --out {output.snapshot:q} > {log:q} 2>&1"


# Reads only the snapshot (offline): conversion to canonical records, label checks, the
# seeded sub-samples.
rule prepare_data:
    input:
        snapshot=get_snapshot,
    output:
        train="resources/data/{dataset}/train.jsonl",
        test="resources/data/{dataset}/test.jsonl",
    log:
        "logs/prepare_data/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    params:
        spec=get_dataset_spec,
        snapshot=get_snapshot_folder,
    shell:
        "ckptsweep prepare --spec {params.spec:q} --snapshot {params.snapshot:q}"
        " --out resources/data/{wildcards.dataset} > {log:q} 2>&1"

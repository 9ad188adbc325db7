# Models: pre-train the tiny models of the embedded default, or resolve a hub model's
# steps to branches pinned to commits; write one checkpoint manifest per step (tokens,
# revision, source) that the jobs of that checkpoint load through; fetch hub weights into
# HF_HOME. One job per checkpoint throughout: adding a step runs that step's jobs only.


# One tokenizer per vocabulary size, shared by every model that asks for it (a byte-level
# BPE trained on the whole corpus, whatever a model's mixture).
rule tokenizer:
    input:
        corpus="resources/world/corpus.jsonl",
        lines="resources/world/tokenizer_lines.txt",
        info="resources/world/world.json",
    output:
        tokenizer=directory("resources/tokenizers/{vocab}"),
    log:
        "logs/tokenizer/{vocab}.log",
    conda:
        "../../envs/train.yaml"
    params:
        spec=get_tokenizer_spec,
    shell:
        "ckptsweep tokenizer --spec {params.spec:q} --corpus {input.corpus:q}"
        " --lines {input.lines:q} --world-info {input.info:q} --out {output.tokenizer:q}"
        " > {log:q} 2>&1"


# One job per checkpoint, on the model's schedule; each starts from the latest training
# state saved below its step (resources/resume/pretrain/, outside the outputs), so the
# steps of a model cost about one pre-training. Smaller steps first, so later ones find
# their states.
rule pretrain:
    input:
        corpus="resources/world/corpus.jsonl",
        tokenizer=get_tokenizer,
    output:
        model=directory("resources/pretrained/{model}/step{step}"),
    log:
        "logs/pretrain/{model}/{step}.log",
    benchmark:
        "benchmarks/pretrain/{model}/{step}.tsv"
    priority: get_pretrain_priority
    conda:
        "../../envs/train.yaml"
    # models.<m>.threads, else the top-level threads (the demo's tiny models: 1; a second
    # thread made the job wait for two free cores, which the scheduler never keeps).
    threads: get_pretrain_threads
    resources:
        # A model's steps share their training states, which Snakemake does not know: two
        # steps run at once would both start from the same earlier state. The local
        # profile caps this at 1 (`resources: {pretrain_slots: 1}`), so each step resumes
        # from the one before it and the other cores run that step's fine-tunes.
        pretrain_slots=1,
    params:
        spec=get_pretrain_spec,
        resume=get_pretrain_resume_dir,
    shell:
        "ckptsweep pretrain --spec {params.spec:q} --corpus {input.corpus:q}"
        " --tokenizer {input.tokenizer:q} --threads {threads} --resume-dir {params.resume:q}"
        " --out {output.model:q} > {log:q} 2>&1"


# A local rule: resolving hub branches needs the network, which only the submitting node
# is sure to have; for tiny local models it only reads the checkpoint's folder.
rule checkpoints:
    input:
        unpack(get_checkpoint_source),
    output:
        manifest="resources/checkpoints/{model}/{step}.tsv",
    log:
        "logs/checkpoints/{model}/{step}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        spec=get_checkpoint_spec,
        pretrained=get_pretrained_folder,
    shell:
        "ckptsweep checkpoints --spec {params.spec:q} --pretrained {params.pretrained:q}"
        " --out {output.manifest:q} > {log:q} 2>&1"


# Hub models only: download the checkpoint's pinned commit into HF_HOME on the submitting
# node; compute jobs then load offline (HF_HUB_OFFLINE=1).
rule prefetch_model:
    input:
        manifest="resources/checkpoints/{model}/{step}.tsv",
    output:
        fetched="resources/prefetch/{model}/{step}.json",
    log:
        "logs/prefetch_model/{model}/{step}.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        trust_remote_code=get_trust_remote_code,
    shell:
        "ckptsweep prefetch-model --manifest {input.manifest:q}"
        " --trust-remote-code {params.trust_remote_code} --out {output.fetched:q} > {log:q} 2>&1"

# Fact tracing (FTRACE, Akyurek et al. 2022): which training examples taught the model a
# fact? BM25 vs TracIn vs embeddings on the facts the model learned, with the reference's
# re-ranking protocol. Present only with an `attribution:` config block; one job per
# (model, slice), then one table and one figure.
# Input functions: the attribution block at the end of common.smk.


rule attribute:
    input:
        unpack(get_attribution_input),
    output:
        out=directory("results/attribution/{model}/{slice}"),
    log:
        "logs/attribute/{model}/{slice}.log",
    benchmark:
        "benchmarks/attribute/{model}/{slice}.tsv"
    wildcard_constraints:
        slice="finetune|pretrain",
    conda:
        "../../envs/attribution.yaml"
    threads: THREADS
    params:
        spec=get_attribution_spec,
    shell:
        "ckptsweep attribute --spec {params.spec:q} --manifest {input.manifest:q}"
        " --world-info {input.info:q} --corpus {input.corpus:q} --threads {threads}"
        " --out {output.out:q} > {log:q} 2>&1"


rule attribution_table:
    input:
        runs=get_attribution_runs,
    output:
        csv="results/tables/attribution.csv",
        html=report(
            "results/tables/attribution.html",
            caption="../report/attribution_table.rst",
            category="Fact tracing",
            labels={"table": "attribution"},
        ),
        png=report(
            "results/figures/attribution.png",
            caption="../report/attribution.rst",
            category="Fact tracing",
            labels={"figure": "attribution"},
        ),
        svg="results/figures/attribution.svg",
    log:
        "logs/attribution_table/attribution_table.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        seed=get_attribution_seed,
        n_boot=get_attribution_n_boot,
    script:
        "../scripts/attribution_report.py"

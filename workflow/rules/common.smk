# Validation, wildcard constraints and the input functions. The grid and every job spec
# are computed by the package (ckptsweep.study), so tests exercise exactly what the dry
# run shows; the functions here are one-line wrappers that Snakemake calls.
import os
from pathlib import Path

from ckptsweep.study import grid, specs
from ckptsweep.study import transfer as population
from ckptsweep.study.checks import check
from ckptsweep.study.config import Study, load

# The config file's values, validated (a bad key is named as written), with the schema's
# defaults filled in, then typed; the cross-references a schema cannot express next.
config.update(
    load(config, Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
)
STUDY = Study.from_config(config, validated=True)
check(STUDY)

# Hub downloads land in HF_HOME on the submitting node and compute jobs read them offline:
# every job, on a cluster node too, must see the same folder (Hugging Face's default
# unless the user set one).
os.environ.setdefault("HF_HOME", str(Path.home() / ".cache" / "huggingface"))


envvars:
    "HF_HOME",


wildcard_constraints:
    model=r"[A-Za-z][A-Za-z0-9_]*",
    step=r"[A-Za-z0-9_]+",
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    ft=r"[A-Za-z][A-Za-z0-9_]*-lr[0-9.e-]+-s[0-9]+",


THREADS = STUDY.threads
EVAL_SETS = grid.eval_sets(STUDY)
# The prediction-method ablation (analysis.ablation), or None: then its rule never runs.
ABLATION = grid.ablation(STUDY)
ATTRIBUTION = STUDY.attribution
jsonarg = specs.jsonarg


def get_final_outputs():
    # The transfer analysis only with its config block (workflow/rules/transfer.smk).
    transfer = ["results/figures/transfer_heatmap.png"] if STUDY.transfer else []
    return [
        "results/scores.parquet",
        "results/tables/summary.json",
        "results/figures/base_steps.png",
        *transfer,
    ]


# ---- data.smk


def get_world_spec(wildcards):
    return specs.world(STUDY)


def get_snapshot(wildcards):
    return specs.snapshot(STUDY, wildcards.dataset)


def get_snapshot_folder(wildcards, input):
    return specs.snapshot_folder(STUDY, wildcards.dataset, input.snapshot)


def get_prefetch_spec(wildcards):
    return specs.prefetch(STUDY, wildcards.dataset)


def get_dataset_spec(wildcards):
    return specs.prepare(STUDY, wildcards.dataset)


# ---- models.smk


def get_pretrain_threads(wildcards):
    return specs.pretrain_threads(STUDY, wildcards.model)


def get_pretrain_spec(wildcards):
    return specs.pretrain(STUDY, wildcards.model)


def get_checkpoint_source(wildcards):
    if STUDY.models[wildcards.model].source == "pretrain":
        return {"pretrained": f"resources/pretrained/{wildcards.model}"}
    return {}


def get_pretrained_folder(wildcards, input):
    return input.get("pretrained", "")


def get_checkpoint_spec(wildcards):
    return specs.checkpoints(STUDY, wildcards.model)


def get_trust_remote_code(wildcards):
    return STUDY.models[wildcards.model].trust_remote_code


def get_model_prefetch(model):
    """Hub weights are fetched on the submitting node before any job loads them."""
    if STUDY.models[model].source == "hub":
        return {"prefetched": f"resources/prefetch/{model}.json"}
    return {}


# ---- finetune.smk


def get_finetune_input(wildcards):
    ft = grid.finetune(STUDY, wildcards.ft, wildcards.model)
    return {
        "manifest": specs.manifest(wildcards.model),
        "train": specs.data(ft.dataset, "train"),
        **get_model_prefetch(wildcards.model),
    }


def get_finetune_spec(wildcards):
    return specs.finetune(STUDY, wildcards.model, wildcards.ft)


def get_attempt(wildcards, attempt):
    return attempt


def get_finetune_gpus(wildcards):
    """Above 1 GPU, `ckptsweep finetune` launches itself under torchrun, one process per GPU."""
    return grid.finetune(STUDY, wildcards.ft, wildcards.model).gpus


def get_finetune_mem_mb(wildcards, attempt):
    return specs.finetune_mem_mb(STUDY, wildcards.model, wildcards.ft, attempt)


def get_resume_dir(wildcards):
    return specs.resume_dir(wildcards.model, wildcards.step, wildcards.ft)


# ---- evaluate.smk


def get_eval_input(wildcards):
    """The checkpoint (manifest), its fine-tunes and every eval set's splits."""
    return {
        "manifest": specs.manifest(wildcards.model),
        **get_model_prefetch(wildcards.model),
        "models": [
            specs.finetuned(wildcards.model, wildcards.step, variant)
            for variant in grid.variants(STUDY, wildcards.model)[1:]
        ],
        **{
            f"{name}_{split}": specs.data(name, split)
            for name in EVAL_SETS
            for split in ("train", "test")
        },
    }


def get_eval_spec(wildcards):
    return specs.evaluate(STUDY, wildcards.model, wildcards.step)


def get_ablation_input(wildcards):
    """The ablation of one model: its manifest (base), the fine-tunes of its final
    checkpoint that the ablation evaluates, and the eval sets' test and train splits."""
    step = grid.final_step(STUDY, wildcards.model)
    plan = grid.ablation(STUDY, wildcards.model)
    return {
        "manifest": specs.manifest(wildcards.model),
        **get_model_prefetch(wildcards.model),
        "models": [
            specs.finetuned(wildcards.model, step, v["name"])
            for v in plan["variants"]
            if v["name"] != "base"
        ],
        "data": [
            specs.data(name, split)
            for name in ABLATION["eval_sets"]
            for split in ("train", "test")
        ],
    }


def get_ablation_spec(wildcards):
    return specs.ablation(STUDY, wildcards.model)


# ---- aggregate.smk


def get_ablation_predictions(wildcards):
    """Every model's ablation predictions; none without an analysis.ablation block."""
    if ABLATION is None:
        return []
    return [f"results/ablation/{m}.parquet" for m in grid.analysis_models(STUDY)]


def get_ablation_table(wildcards):
    return [] if ABLATION is None else ["results/tables/ablation.csv"]


def get_all_predictions(wildcards):
    """The evaluation folders (one per checkpoint) of the analysed models."""
    return sorted(
        {f"results/predictions/{m}/{s}" for m, s, _ in specs.grid_runs(STUDY)}
    )


def get_manifests(wildcards):
    return [specs.manifest(model) for model in grid.analysis_models(STUDY)]


def get_runs_spec(wildcards):
    return specs.runs(STUDY)


def get_analysis_seed(wildcards):
    return STUDY.analysis.seed


def get_analysis_spec(wildcards):
    return specs.analysis(STUDY)


# ---- transfer.smk


def get_transfer_predictions(wildcards):
    """Every member's base and post-SFT predictions."""
    return sorted({str(Path(run["path"]).parent) for run in population.runs(STUDY)})


def get_transfer_gold(wildcards):
    """The benchmarks' test files: the gold choice index of each example."""
    return {name: specs.data(name, "test") for name in population.categories(STUDY)}


def get_transfer_gold_files(wildcards):
    return list(get_transfer_gold(wildcards).values())


def get_transfer_spec(wildcards):
    return specs.transfer(STUDY)


# ---- attribution.smk


def get_attribution_targets():
    """The final targets of the stage; none without an attribution block."""
    if ATTRIBUTION is None:
        return []
    return [
        "results/tables/attribution.csv",
        "results/tables/attribution.html",
        "results/figures/attribution.png",
    ]


def get_attribution_input(wildcards):
    return {
        "manifest": specs.manifest(wildcards.model),
        "info": "resources/world/world.json",
        "corpus": "resources/world/corpus.jsonl",
    }


def get_attribution_spec(wildcards):
    return specs.attribution(STUDY, wildcards.model, wildcards.slice)


def get_attribution_runs(wildcards):
    return [
        f"results/attribution/{model}/{slc}"
        for model in specs.attribution_models(STUDY)
        for slc in ATTRIBUTION.slices
    ]


def get_attribution_seed(wildcards):
    return ATTRIBUTION.seed


def get_attribution_n_boot(wildcards):
    return ATTRIBUTION.n_boot

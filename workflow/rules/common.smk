# Validation, wildcard constraints and the input functions. The grid and every job spec
# are computed by the package (ckptsweep.study), so tests exercise exactly what the dry
# run shows; the functions here are one-line wrappers that Snakemake calls.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from ckptsweep.operate.guard import summary
from ckptsweep.study import advisor, grid, specs
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

# Finished expensive jobs that a changed setting would redo: said in every dry run, and a
# real run stops before any job unless confirm_rerun (onstart, in the Snakefile). Not in
# the jobs themselves (a cluster job parses the workflow too).
GUARD, GUARD_STOP = "", False
if not (workflow.remote_exec or workflow.subprocess_exec):
    GUARD, GUARD_STOP = summary(
        STUDY,
        Path.cwd(),
        " ".join(map(str, workflow.overwrite_configfiles or [])) or "FILE",
    )
    if GUARD:
        print(GUARD, file=sys.stderr)

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
    vocab=r"[0-9]+",


THREADS = STUDY.threads
EVAL_SETS = grid.eval_sets(STUDY)
# The prediction-method ablation (analysis.ablation), or None: then its rule never runs.
ABLATION = grid.ablation(STUDY)
ATTRIBUTION = STUDY.attribution
jsonarg = specs.jsonarg
# Predictions are cached by everything that changes one (evaluation.cache_dir: null):
# re-running a checkpoint's evaluation recomputes only what is new.
PREDICTION_CACHE = "resources/cache/predictions"


def get_final_outputs():
    # The transfer analysis only with its config block (workflow/rules/transfer.smk).
    transfer = ["results/figures/transfer_heatmap.png"] if STUDY.transfer else []
    # An adaptive sweep fine-tunes a few checkpoints only: no full grid's tables.
    if advisor.adaptive(STUDY):
        return [*advisor.adaptive_targets(), *transfer]
    return [
        "results/scores.parquet",
        "results/tables/summary.json",
        "results/figures/base_steps.png",
        *transfer,
        *advisor.targets(STUDY),
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


def get_tokenizer_spec(wildcards):
    return specs.tokenizer(wildcards.vocab)


def get_tokenizer(wildcards):
    return specs.tokenizer_folder(STUDY, wildcards.model)


def get_pretrain_spec(wildcards):
    return specs.pretrain(STUDY, wildcards.model, wildcards.step)


def get_pretrain_priority(wildcards):
    return specs.pretrain_priority(STUDY, wildcards.model, wildcards.step)


def get_pretrain_resume_dir(wildcards):
    return specs.pretrain_resume_dir(wildcards.model)


def get_checkpoint_source(wildcards):
    if STUDY.models[wildcards.model].source == "pretrain":
        return {"pretrained": specs.pretrained(wildcards.model, wildcards.step)}
    return {}


def get_pretrained_folder(wildcards, input):
    """The folder holding the model's step folders (empty for hub models)."""
    return str(Path(input.pretrained).parent) if "pretrained" in input.keys() else ""


def get_checkpoint_spec(wildcards):
    return specs.checkpoints(STUDY, wildcards.model, wildcards.step)


def get_trust_remote_code(wildcards):
    return STUDY.models[wildcards.model].trust_remote_code


def get_model_prefetch(model, step):
    """Hub weights are fetched on the submitting node before any job loads them."""
    if STUDY.models[model].source == "hub":
        return {"prefetched": specs.prefetched(model, step)}
    return {}


# ---- finetune.smk


def get_finetune_input(wildcards):
    ft = grid.finetune(STUDY, wildcards.ft, wildcards.model)
    return {
        "manifest": specs.manifest(wildcards.model, wildcards.step),
        "train": specs.data(ft.dataset, "train"),
        **get_model_prefetch(wildcards.model, wildcards.step),
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
        "manifest": specs.manifest(wildcards.model, wildcards.step),
        **get_model_prefetch(wildcards.model, wildcards.step),
        "models": [
            specs.finetuned(wildcards.model, wildcards.step, variant)
            for variant in grid.variants(STUDY, wildcards.model)[1:]
        ],
        **{
            f"{name}_{split}": specs.data(name, split)
            for name in specs.evaluated_sets(STUDY, wildcards.model)
            for split in ("train", "test")
        },
    }


def get_eval_batch(wildcards):
    return specs.eval_batch(STUDY)


def get_eval_spec(wildcards):
    return specs.evaluate(STUDY, wildcards.model, wildcards.step)


def get_ablation_input(wildcards):
    """The ablation of one model: its manifest (base), the fine-tunes of its final
    checkpoint that the ablation evaluates, and the eval sets' test and train splits."""
    step = grid.final_step(STUDY, wildcards.model)
    plan = grid.ablation(STUDY, wildcards.model)
    return {
        "manifest": specs.manifest(wildcards.model, step),
        **get_model_prefetch(wildcards.model, step),
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
    return [
        specs.manifest(model, step)
        for model in grid.analysis_models(STUDY)
        for step in grid.steps(STUDY, model)
    ]


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
        "manifest": [
            specs.manifest(wildcards.model, str(step))
            for step in specs.attribution_steps(STUDY, wildcards.model, wildcards.slice)
        ],
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


# ---- advisor.smk


def get_proxy_input(wildcards):
    return {
        **advisor.proxy_input(STUDY, wildcards.model, wildcards.step),
        **get_model_prefetch(wildcards.model, wildcards.step),
    }


def get_proxy_spec(wildcards):
    return advisor.proxy(STUDY, wildcards.model, wildcards.step)


def get_proxy_folders(wildcards):
    return advisor.proxy_folders(STUDY)


def get_proxy_manifests(wildcards):
    return advisor.proxy_manifests(STUDY)


def get_proxy_runs(wildcards):
    return advisor.proxy_runs(STUDY)


def get_bpb_input(wildcards):
    return {
        **advisor.bpb_input(STUDY, wildcards.model, wildcards.step),
        **get_model_prefetch(wildcards.model, wildcards.step),
    }


def get_bpb_spec(wildcards):
    return advisor.bpb(STUDY, wildcards.model, wildcards.step)


def get_advisor_bpb(wildcards):
    return advisor.bpb_files(STUDY)


def get_advisor_proxy(wildcards):
    return advisor.proxy_scores(STUDY)


def get_advisor_transfer(wildcards):
    return advisor.transfer_metrics(STUDY)


def get_advisor_gold(wildcards):
    return advisor.gold_files(STUDY)


def get_advisor_gold_files(wildcards):
    return list(advisor.gold_files(STUDY).values())


def get_advisor_spec(wildcards):
    return advisor.settings(STUDY)


def get_adaptive_spec(wildcards):
    return advisor.adaptive_spec(STUDY)


def get_adaptive_last(wildcards):
    """The last checkpoints' evaluations: fine-tuned in the first phase already."""
    return advisor.last_predictions(STUDY)


def get_adaptive_selected(wildcards):
    """The second phase: known once the checkpoint adaptive_select has run."""
    return advisor.selected_predictions(checkpoints.adaptive_select.get().output[0])

# The study grid and the input functions. The grid itself is computed by the package
# (ckptsweep.study), so tests exercise exactly what the dry run shows.
import json

from snakemake.utils import validate

from ckptsweep import study

validate(config, "../schemas/config.schema.yaml")
study.check(config)


wildcard_constraints:
    model=r"[A-Za-z][A-Za-z0-9_]*",
    step=r"[A-Za-z0-9_]+",
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    ft=r"[A-Za-z][A-Za-z0-9_]*-lr[0-9.e-]+-s[0-9]+",
    variant=r"base|[A-Za-z][A-Za-z0-9_]*-lr[0-9.e-]+-s[0-9]+",


THREADS = config.get("threads", 1)
EVAL_SETS = study.eval_sets(config)
# The prediction-method ablation (analysis.ablation), or None: then its rule never runs.
ABLATION = study.ablation(config)


def jsonarg(obj):
    """A config block as one JSON argument; params changes re-run the job."""
    return json.dumps(obj, sort_keys=True)


def grid():
    """(model, step, variant) of every evaluation job."""
    return [
        (model, step, variant)
        for model in config["models"]
        for step in study.steps(config, model)
        for variant in study.variants(config, model)
    ]


def get_final_outputs():
    return [
        "results/scores.parquet",
        "results/tables/summary.json",
        "results/figures/base_steps.png",
    ]


def get_world_spec(wildcards):
    return jsonarg(config.get("world", {}))


def get_raw_data(wildcards):
    return "resources/world/raw"


def get_dataset_spec(wildcards):
    d = config["datasets"][wildcards.dataset]
    return jsonarg(
        {
            "dataset": wildcards.dataset,
            "schema": d["schema"],
            "task": d["task"],
            "n_train": d.get("n_train"),
            "n_test": d.get("n_test"),
            "evaluated": "eval" in d,
            "seed": 42,
        }
    )


def get_pretrain_spec(wildcards):
    m = config["models"][wildcards.model]
    spec = {"checkpoints": m["steps"], **m.get("pretrain", {})}
    return jsonarg({"pretrain": spec, "tokenizer": m.get("tokenizer", {})})


def get_checkpoint_source(wildcards):
    m = config["models"][wildcards.model]
    if m["source"] == "pretrain":
        return {"pretrained": f"resources/pretrained/{wildcards.model}"}
    return {}


def get_finetune_input(wildcards):
    ft = study.finetune(config, wildcards.ft)
    return {
        "manifest": f"resources/checkpoints/{wildcards.model}.tsv",
        "train": f"resources/data/{ft['dataset']}/train.jsonl",
    }


def get_finetune_spec(wildcards):
    ft = study.finetune(config, wildcards.ft)
    settings = {k: v for k, v in ft["settings"].items() if k not in ("lr", "seeds")}
    return jsonarg({"task": ft["task"], **settings, "lr": ft["lr"], "seed": ft["seed"]})


def get_resume_dir(wildcards):
    """Resumable fine-tuning state: outside the job's outputs, which Snakemake deletes
    when a job fails, so a retried or resubmitted job continues where it stopped."""
    return f"resources/resume/{wildcards.model}/{wildcards.step}/{wildcards.ft}"


def get_eval_input(wildcards):
    data = {
        f"{name}_{split}": f"resources/data/{name}/{split}.jsonl"
        for name in EVAL_SETS
        for split in ("train", "test")
    }
    if wildcards.variant == "base":
        model = {"manifest": f"resources/checkpoints/{wildcards.model}.tsv"}
    else:
        model = {
            "model": f"results/models/{wildcards.model}/{wildcards.step}/{wildcards.variant}"
        }
    return {**model, **data}


def get_eval_spec(wildcards):
    sets = [
        {
            "name": name,
            "task": EVAL_SETS[name]["task"],
            "test_path": f"resources/data/{name}/test.jsonl",
            "pool_path": f"resources/data/{name}/train.jsonl",
            "formats": formats,
        }
        # Sorted: reordering datasets in the config must not look like a params change.
        for name, formats in sorted(study.eval_plan(config, wildcards.variant).items())
    ]
    return jsonarg({"sets": sets, "evaluation": config["evaluation"]})


def get_ablation_input(wildcards):
    """The ablation of one model: its manifest (base), the fine-tunes of its final
    checkpoint that the ablation evaluates, and the eval sets' test and train splits."""
    step = study.final_step(config, wildcards.model)
    plan = study.ablation(config, wildcards.model)
    return {
        "manifest": f"resources/checkpoints/{wildcards.model}.tsv",
        "models": [
            f"results/models/{wildcards.model}/{step}/{v['name']}"
            for v in plan["variants"]
            if v["name"] != "base"
        ],
        "data": [
            f"resources/data/{name}/{split}.jsonl"
            for name in ABLATION["eval_sets"]
            for split in ("train", "test")
        ],
    }


def get_ablation_spec(wildcards):
    step = study.final_step(config, wildcards.model)
    plan = study.ablation(config, wildcards.model)
    sets = [
        {
            "name": name,
            "task": EVAL_SETS[name]["task"],
            "test_path": f"resources/data/{name}/test.jsonl",
            "pool_path": f"resources/data/{name}/train.jsonl",
            "formats": ["default"],
        }
        for name in sorted(ABLATION["eval_sets"])
    ]
    variants = [
        {
            "name": v["name"],
            "sets": sorted(v["sets"]),
            "model": (
                None
                if v["name"] == "base"
                else f"results/models/{wildcards.model}/{step}/{v['name']}"
            ),
        }
        for v in plan["variants"]
    ]
    return jsonarg(
        {
            "model": wildcards.model,
            "step": step,
            "sets": sets,
            "variants": variants,
            "methods": ABLATION["methods"],
            "evaluation": config["evaluation"],
        }
    )


def get_ablation_predictions(wildcards):
    """Every model's ablation predictions; none without an analysis.ablation block."""
    if ABLATION is None:
        return []
    return [f"results/ablation/{model}.parquet" for model in config["models"]]


def get_ablation_table(wildcards):
    return [] if ABLATION is None else ["results/tables/ablation.csv"]


def get_all_predictions(wildcards):
    return [
        f"results/predictions/{model}/{step}/{variant}.parquet"
        for model, step, variant in grid()
    ]


def get_manifests(wildcards):
    return [f"resources/checkpoints/{model}.tsv" for model in config["models"]]


def get_runs_spec(wildcards):
    """Provenance of every predictions file, read by the aggregation."""
    fts = {f["name"]: f for f in study.finetunes(config)}
    runs = []
    for model, step, variant in grid():
        ft = fts.get(variant)
        runs.append(
            {
                "path": f"results/predictions/{model}/{step}/{variant}.parquet",
                "model": model,
                "step": step,
                "variant": variant,
                "train_task": ft["dataset"] if ft else None,
                "train_kind": study.task_type(ft["task"]).kind if ft else None,
                "lr": ft["lr"] if ft else None,
                "seed": ft["seed"] if ft else None,
            }
        )
    return jsonarg({"runs": runs, "eval_sets": EVAL_SETS})


def get_analysis_spec(wildcards):
    return jsonarg(config["analysis"])

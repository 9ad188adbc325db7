# The study grid and the input functions. The grid itself is computed by the package
# (ckptsweep.study), so tests exercise exactly what the dry run shows.
import json
from pathlib import Path

from snakemake.utils import validate

from ckptsweep.study import checks
from ckptsweep.study import grid as study
from ckptsweep.study import transfer as transfer_config

validate(config, "../schemas/config.schema.yaml")
checks.check(config)


wildcard_constraints:
    model=r"[A-Za-z][A-Za-z0-9_]*",
    step=r"[A-Za-z0-9_]+",
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    ft=r"[A-Za-z][A-Za-z0-9_]*-lr[0-9.e-]+-s[0-9]+",


THREADS = config.get("threads", 1)
EVAL_SETS = study.eval_sets(config)
# The prediction-method ablation (analysis.ablation), or None: then its rule never runs.
ABLATION = study.ablation(config)


def jsonarg(obj):
    """A config block as one JSON argument; params changes re-run the job."""
    return json.dumps(obj, sort_keys=True)


def grid():
    """(model, step, variant) of every evaluation job the scores table reads: those of
    analysis.models (default all; the transfer population has rules of its own)."""
    return [
        (model, step, variant)
        for model in study.analysis_models(config)
        for step in study.steps(config, model)
        for variant in study.variants(config, model)
    ]


def get_final_outputs():
    # The transfer analysis only with its config block (workflow/rules/transfer.smk).
    transfer = ["results/figures/transfer_heatmap.png"] if "transfer" in config else []
    return [
        "results/scores.parquet",
        "results/tables/summary.json",
        "results/figures/base_steps.png",
        *transfer,
    ]


def get_world_spec(wildcards):
    return jsonarg(config.get("world", {}))


def get_snapshot(wildcards):
    """World datasets are snapshotted together (rule snapshot_world), hub ones one by one
    (rule prefetch); prepare_data reads either the same way."""
    if config["datasets"][wildcards.dataset].get("source", "world") == "world":
        return "resources/world/snapshots"
    return f"resources/snapshots/{wildcards.dataset}"


def snapshot_folder(dataset, snapshot):
    """The folder of one dataset's snapshot inside a prepare_data job's input."""
    if config["datasets"][dataset].get("source", "world") == "world":
        return f"{snapshot}/{dataset}"
    return snapshot


def get_prefetch_spec(wildcards):
    d = config["datasets"][wildcards.dataset]
    spec = {"dataset": wildcards.dataset, "source": d.get("source", "world")}
    if "hub" in d:
        spec["hub"] = d["hub"]
    return jsonarg(spec)


def get_dataset_spec(wildcards):
    d = config["datasets"][wildcards.dataset]
    spec = {
        "dataset": wildcards.dataset,
        "schema": d["schema"],
        "task": d["task"],
        "n_train": d.get("n_train"),
        "n_test": d.get("n_test"),
        "evaluated": "eval" in d,
        "seed": 42,
    }
    # Only when set, so the demo's prepare jobs keep their params (and their outputs).
    spec.update({k: d[k] for k in ("options", "train_fraction") if k in d})
    return jsonarg(spec)


def get_pretrain_threads(wildcards):
    return config["models"][wildcards.model].get("threads", THREADS)


def get_pretrain_spec(wildcards):
    m = config["models"][wildcards.model]
    spec = {"checkpoints": m["steps"], **m.get("pretrain", {})}
    return jsonarg({"pretrain": spec, "tokenizer": m.get("tokenizer", {})})


def get_checkpoint_source(wildcards):
    m = config["models"][wildcards.model]
    if m["source"] == "pretrain":
        return {"pretrained": f"resources/pretrained/{wildcards.model}"}
    return {}


def get_checkpoint_spec(wildcards):
    """The model block the checkpoints job resolves (hub: repo, refs, repos, pattern)."""
    m = config["models"][wildcards.model]
    keys = ("source", "repo", "refs", "repos", "branch_pattern", "tokens_per_step")
    spec = {k: m[k] for k in keys if k in m}
    spec["steps"] = m["steps"]
    spec["trust_remote_code"] = m.get("trust_remote_code", False)
    return jsonarg(spec)


def get_model_prefetch(model):
    """Hub weights are fetched on the submitting node before any job loads them."""
    if config["models"][model]["source"] == "hub":
        return {"prefetched": f"resources/prefetch/{model}.json"}
    return {}


def get_finetune_input(wildcards):
    ft = study.finetune(config, wildcards.ft, wildcards.model)
    return {
        "manifest": f"resources/checkpoints/{wildcards.model}.tsv",
        "train": f"resources/data/{ft['dataset']}/train.jsonl",
        **get_model_prefetch(wildcards.model),
    }


def get_finetune_spec(wildcards):
    ft = study.finetune(config, wildcards.ft, wildcards.model)
    # lr and seed: one value each per fine-tune; mem_mb: the job's, not the trainer's.
    settings = {
        k: v for k, v in ft["settings"].items() if k not in ("lr", "seeds", "mem_mb")
    }
    return jsonarg({"task": ft["task"], **settings, "lr": ft["lr"], "seed": ft["seed"]})


def get_finetune_gpus(wildcards):
    """GPUs of one fine-tune (its `gpus` setting, default 1): the rule's gpu resource.
    Above 1, `ckptsweep finetune` launches itself under torchrun, one process per GPU.
    """
    ft = study.finetune(config, wildcards.ft, wildcards.model)
    return int(ft["settings"].get("gpus", 1))


def get_finetune_mem_mb(wildcards, attempt):
    """Host memory of one fine-tune: its `mem_mb` setting (per process, default 32000) x
    its GPUs, doubled on each retry. Per model: the paper's models differ 7-fold."""
    ft = study.finetune(config, wildcards.ft, wildcards.model)
    per_process = int(ft["settings"].get("mem_mb", 32000))
    return per_process * get_finetune_gpus(wildcards) * 2 ** (attempt - 1)


def get_resume_dir(wildcards):
    """Resumable fine-tuning state: outside the job's outputs, which Snakemake deletes
    when a job fails, so a retried or resubmitted job continues where it stopped."""
    return f"resources/resume/{wildcards.model}/{wildcards.step}/{wildcards.ft}"


def get_eval_input(wildcards):
    """The checkpoint (manifest), its fine-tunes and every eval set's splits."""
    data = {
        f"{name}_{split}": f"resources/data/{name}/{split}.jsonl"
        for name in EVAL_SETS
        for split in ("train", "test")
    }
    return {
        "manifest": f"resources/checkpoints/{wildcards.model}.tsv",
        **get_model_prefetch(wildcards.model),
        "models": [
            f"results/models/{wildcards.model}/{wildcards.step}/{variant}"
            for variant in study.variants(config, wildcards.model)[1:]
        ],
        **data,
    }


def eval_set_spec(name, formats, answer_words=None):
    """One eval set as `ckptsweep evaluate` and `ckptsweep ablation` read it."""
    return {
        "name": name,
        "task": EVAL_SETS[name]["task"],
        "test_path": f"resources/data/{name}/test.jsonl",
        "pool_path": f"resources/data/{name}/train.jsonl",
        "formats": formats,
        **({"answer_words": answer_words} if answer_words else {}),
    }


def get_eval_spec(wildcards):
    """Each variant of the checkpoint: its folder (None: the base model, read from the
    manifest) and the sets and formats of its plan (study.eval_plan)."""
    w = wildcards
    variants = [
        {
            "name": variant,
            "model": (
                None
                if variant == "base"
                else f"results/models/{w.model}/{w.step}/{variant}"
            ),
            # Sorted: reordering datasets in the config must not look like a params change.
            "sets": [
                eval_set_spec(
                    name,
                    formats,
                    study.answer_words(config, variant, w.model, name),
                )
                for name, formats in sorted(
                    study.eval_plan(config, variant, w.model).items()
                )
            ],
        }
        for variant in study.variants(config, w.model)
    ]
    return jsonarg(
        {"step": w.step, "variants": variants, "evaluation": config["evaluation"]}
    )


def get_ablation_input(wildcards):
    """The ablation of one model: its manifest (base), the fine-tunes of its final
    checkpoint that the ablation evaluates, and the eval sets' test and train splits."""
    step = study.final_step(config, wildcards.model)
    plan = study.ablation(config, wildcards.model)
    return {
        "manifest": f"resources/checkpoints/{wildcards.model}.tsv",
        **get_model_prefetch(wildcards.model),
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
    sets = [eval_set_spec(name, ["default"]) for name in sorted(ABLATION["eval_sets"])]
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
    return [
        f"results/ablation/{model}.parquet" for model in study.analysis_models(config)
    ]


def get_ablation_table(wildcards):
    return [] if ABLATION is None else ["results/tables/ablation.csv"]


def get_all_predictions(wildcards):
    """The evaluation folders (one per checkpoint) of the analysed models."""
    return sorted({f"results/predictions/{model}/{step}" for model, step, _ in grid()})


def get_manifests(wildcards):
    return [
        f"resources/checkpoints/{model}.tsv" for model in study.analysis_models(config)
    ]


def get_runs_spec(wildcards):
    """Provenance of every predictions file, read by the aggregation."""
    fts = {
        (m, f["name"]): f for m in config["models"] for f in study.finetunes(config, m)
    }
    runs = []
    for model, step, variant in grid():
        ft = fts.get((model, variant))
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
    """The `analysis` block, plus the GPUs of each multi-GPU fine-tune (GPU-hours table)."""
    return jsonarg({**config["analysis"], "finetune_gpus": study.finetune_gpus(config)})


# The transfer population (config block `transfer`, workflow/rules/transfer.smk).


def get_transfer_predictions(wildcards):
    """Every member's base and post-SFT predictions."""
    return sorted(
        {str(Path(run["path"]).parent) for run in transfer_config.runs(config)}
    )


def get_transfer_gold(wildcards):
    """The benchmarks' test files: the gold choice index of each example."""
    return {
        name: f"resources/data/{name}/test.jsonl"
        for name in transfer_config.categories(config)
    }


def get_transfer_spec(wildcards):
    return jsonarg(
        {
            "runs": transfer_config.runs(config),
            "categories": transfer_config.categories(config),
            "settings": transfer_config.settings(config),
        }
    )


# ---- Fact tracing (attribution.smk): the attribution block, its targets and inputs ----

ATTRIBUTION = config.get("attribution")


def attribution_models():
    """Models to trace: attribution.models, default the first model."""
    models = ATTRIBUTION.get("models") or list(config["models"])[:1]
    for m in models:
        if config["models"][m]["source"] != "pretrain":
            raise ValueError(
                f"attribution.models: {m!r} is not a pre-trained (embedded) model; "
                "hub models (FTRACE-TREx) are not wired into the workflow yet"
            )
    return models


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
        "manifest": f"resources/checkpoints/{wildcards.model}.tsv",
        "info": "resources/world/world.json",
        "corpus": "resources/world/corpus.jsonl",
    }


def get_attribution_spec(wildcards):
    a = ATTRIBUTION
    m = config["models"][wildcards.model]
    cand = a.get("candidates", {})
    spec = {
        "model": wildcards.model,
        "slice": wildcards.slice,
        "steps": sorted(int(s) for s in m["steps"]),
        "seed": a.get("seed", 0),
        "max_queries": a.get("max_queries", 100),
        "n_bm25": cand.get("bm25", 100),
        "n_same": cand.get("same_answer", 100),
        "n_random": cand.get("random", 100),
        "methods": a.get(
            "methods",
            ["bm25", "tracin", "tracin_cos", "embed_dot", "embed_cos", "random"],
        ),
        "tracin": a.get("tracin", {}),
        "device": a.get("device", "auto"),
    }
    if wildcards.slice == "finetune":
        spec["finetune"] = a.get("finetune", {})
    else:
        spec["pretrain"] = {k: v for k, v in m.get("pretrain", {}).items()}
    return jsonarg(spec)


def get_attribution_runs(wildcards):
    return [
        f"results/attribution/{model}/{slc}"
        for model in attribution_models()
        for slc in ATTRIBUTION.get("slices", ["finetune"])
    ]

"""Every job's ``--spec``: the part of the config a job reads, as one JSON argument.

Snakemake re-runs a job exactly when its params change, so a spec holds what changes the
job's result and nothing else, and each is pinned (``tests/test_job_pins.py``): a spec
passes blocks on as the config wrote them (with the schema's defaults, which Snakemake
fills in), never a default the config did not hold. Paths are the workflow's own.
"""

from __future__ import annotations

import json

from ckptsweep.study import grid
from ckptsweep.study import transfer as population
from ckptsweep.study.config import Study


def jsonarg(obj) -> str:
    """A config block as one JSON argument (sorted keys: reordering a config is no
    change)."""
    return json.dumps(obj, sort_keys=True)


def manifest(model: str, step: str) -> str:
    """The checkpoint manifest of one checkpoint (one per step: a job depends on its own
    checkpoint only, so adding a step re-runs nothing that was finished)."""
    return f"resources/checkpoints/{model}/{step}.tsv"


def prefetched(model: str, step: str) -> str:
    """The record of a hub checkpoint's download into HF_HOME."""
    return f"resources/prefetch/{model}/{step}.json"


def pretrained(model: str, step: str) -> str:
    """The folder of an embedded model's checkpoint."""
    return f"resources/pretrained/{model}/step{step}"


def data(dataset: str, split: str) -> str:
    """A dataset's canonical records."""
    return f"resources/data/{dataset}/{split}.jsonl"


def finetuned(model: str, step: str, ft: str) -> str:
    """The folder of one fine-tuned model."""
    return f"results/models/{model}/{step}/{ft}"


# ------------------------------------------------------------------------------ data

def world(study: Study) -> str:
    return jsonarg(study.raw.get("world", {}))


def is_world(study: Study, dataset: str) -> bool:
    return study.datasets[dataset].source == "world"


def snapshot(study: Study, dataset: str) -> str:
    """World datasets are snapshotted together (rule snapshot_world), hub ones one by one
    (rule prefetch); prepare_data reads either the same way."""
    return "resources/world/snapshots" if is_world(study, dataset) else \
        f"resources/snapshots/{dataset}"


def snapshot_folder(study: Study, dataset: str, snapshot: str) -> str:
    """The folder of one dataset's snapshot inside a prepare_data job's input."""
    return f"{snapshot}/{dataset}" if is_world(study, dataset) else snapshot


def prefetch(study: Study, dataset: str) -> str:
    d = study.datasets[dataset]
    spec = {"dataset": dataset, "source": d.source}
    if d.hub is not None:
        spec["hub"] = study.raw["datasets"][dataset]["hub"]
    return jsonarg(spec)


def prepare(study: Study, dataset: str) -> str:
    d = study.raw["datasets"][dataset]
    spec = {"dataset": dataset, "schema": d["schema"], "task": d["task"],
            "n_train": d.get("n_train"), "n_test": d.get("n_test"),
            "evaluated": "eval" in d, "seed": 42}
    # Only when set, so the demo's prepare jobs keep their params (and their outputs).
    spec.update({k: d[k] for k in ("options", "train_fraction") if k in d})
    return jsonarg(spec)


# ---------------------------------------------------------------------------- models

def pretrain_threads(study: Study, model: str) -> int:
    m = study.models[model]
    return m.threads if m.threads is not None else study.threads


def tokenizer_folder(study: Study, model: str) -> str:
    """The tokenizer of an embedded model: one per vocabulary size, shared."""
    from ckptsweep.data.tokenizer import VOCAB_SIZE

    return f"resources/tokenizers/{study.models[model].tokenizer.get('vocab_size', VOCAB_SIZE)}"


def tokenizer(vocab: str) -> str:
    return jsonarg({"tokenizer": {"vocab_size": int(vocab)}})


def pretrain(study: Study, model: str, step: str) -> str:
    """One checkpoint's pre-training: the model's schedule (its ``pretrain`` block) and the
    step; nothing about the model's other steps, so adding one changes no other job."""
    m = study.raw["models"][model]
    return jsonarg({"model": model, "pretrain": m.get("pretrain", {}), "step": int(step)})


def pretrain_priority(study: Study, model: str, step: str) -> int:
    """The pre-training that more jobs wait on first: the jobs of this checkpoint and of
    the model's later ones (each a fine-tune per training run, and one evaluation), since
    a later step resumes from this one's state. So a model's smaller steps come first,
    and the model of the main grid before the transfer population's (the demo's tiny
    model, 5 fine-tunes per checkpoint, before a member with 1), whose jobs otherwise
    fill every core first. How the jobs are ordered only: not in the job's command or
    spec, so changing it re-runs nothing."""
    steps = sorted(study.models[model].steps)
    later = len(steps) - steps.index(int(step))
    return later * (1 + len(grid.finetunes(study, model)))


def pretrain_resume_dir(model: str) -> str:
    """The training states of a model's pre-training, shared by its step jobs and kept
    outside their outputs."""
    return f"resources/resume/pretrain/{model}"


def checkpoints(study: Study, model: str, step: str) -> str:
    """The model block the checkpoints job resolves for one step (hub: repo, refs, repos,
    pattern)."""
    m = study.raw["models"][model]
    keys = ("source", "repo", "refs", "repos", "branch_pattern", "tokens_per_step")
    spec = {k: m[k] for k in keys if k in m}
    spec["steps"] = [int(step)]
    spec["trust_remote_code"] = study.models[model].trust_remote_code
    return jsonarg(spec)


# -------------------------------------------------------------------------- finetune

def finetune(study: Study, model: str, ft: str) -> str:
    f = grid.finetune(study, ft, model)
    # lr and seed: one value each per fine-tune; mem_mb: the job's, not the trainer's.
    settings = {k: v for k, v in f.settings.items() if k not in ("lr", "seeds", "mem_mb")}
    return jsonarg({"task": f.task, **settings, "lr": f.lr, "seed": f.seed})


def finetune_mem_mb(study: Study, model: str, ft: str, attempt: int) -> int:
    """Host memory of one fine-tune: its ``mem_mb`` per process x its GPUs, doubled on
    each retry. Per model: the paper's models differ 7-fold."""
    f = grid.finetune(study, ft, model)
    return f.mem_mb * f.gpus * 2 ** (attempt - 1)


def resume_dir(model: str, step: str, ft: str) -> str:
    """Resumable fine-tuning state: outside the job's outputs, which Snakemake deletes
    when a job fails, so a retried or resubmitted job continues where it stopped."""
    return f"resources/resume/{model}/{step}/{ft}"


# -------------------------------------------------------------------------- evaluate

RUNTIME_ONLY = ("batch_size",)
"""Evaluation keys that change how a job runs, not what it computes: passed as the rule's
resource (`eval_batch`), never in a spec, so changing them re-runs nothing."""


def evaluation(study: Study) -> dict:
    """The ``evaluation`` block as a spec holds it: as written, without `RUNTIME_ONLY`."""
    return {k: v for k, v in study.raw["evaluation"].items() if k not in RUNTIME_ONLY}


def eval_batch(study: Study) -> str:
    """The evaluation's batch policy (``auto`` or a number of examples), for the rules."""
    return str(study.evaluation.batch_size)


def eval_set(study: Study, name: str, formats, answer_words=None) -> dict:
    """One eval set as `ckptsweep evaluate` and `ckptsweep ablation` read it."""
    return {"name": name, "task": study.datasets[name].task,
            "test_path": data(name, "test"), "pool_path": data(name, "train"),
            "formats": formats, **({"answer_words": answer_words} if answer_words else {})}


def evaluated_sets(study: Study, model: str) -> list[str]:
    """The eval sets some variant of ``model`` is evaluated on: its evaluation jobs read
    those files only, so a new eval set re-runs only the jobs that score it."""
    return sorted({name for variant in grid.variants(study, model)
                   for name in grid.eval_plan(study, variant, model)})


def evaluate(study: Study, model: str, step: str) -> str:
    """Each variant of the checkpoint: its folder (None: the base model, read from the
    manifest) and the sets and formats of its plan (`grid.eval_plan`)."""
    variants = [
        {"name": variant,
         "model": None if variant == "base" else finetuned(model, step, variant),
         # Sorted: reordering datasets in the config must not look like a params change.
         "sets": [eval_set(study, name, formats,
                           grid.answer_words(study, variant, model, name))
                  for name, formats in sorted(grid.eval_plan(study, variant, model).items())]}
        # Sorted (base first): reordering the config's tasks is no change either.
        for variant in ["base", *sorted(grid.variants(study, model)[1:])]]
    return jsonarg({"step": step, "variants": variants, "evaluation": evaluation(study)})


def ablation(study: Study, model: str) -> str:
    step = grid.final_step(study, model)
    plan = grid.ablation(study, model)
    sets = [eval_set(study, name, ["default"]) for name in sorted(plan["eval_sets"])]
    variants = [{"name": v["name"], "sets": sorted(v["sets"]),
                 "model": None if v["name"] == "base" else finetuned(model, step, v["name"])}
                for v in plan["variants"]]
    return jsonarg({"model": model, "step": step, "sets": sets, "variants": variants,
                    "methods": plan["methods"], "evaluation": evaluation(study)})


# ------------------------------------------------------------------------- aggregate

def grid_runs(study: Study) -> list[tuple[str, str, str]]:
    """(model, step, variant) of every evaluation the scores table reads: those of
    analysis.models (default all; the transfer population has rules of its own)."""
    return [(model, step, variant) for model in grid.analysis_models(study)
            for step in grid.steps(study, model) for variant in grid.variants(study, model)]


def runs(study: Study) -> str:
    """Provenance of every predictions file, read by the aggregation."""
    from ckptsweep.data.tasks import task_type

    fts = {(m, f.name): f for m in study.models for f in grid.finetunes(study, m)}
    out = []
    for model, step, variant in grid_runs(study):
        ft = fts.get((model, variant))
        out.append({"path": f"results/predictions/{model}/{step}/{variant}.parquet",
                    "model": model, "step": step, "variant": variant,
                    "train_task": ft.dataset if ft else None,
                    "train_kind": task_type(ft.task).kind if ft else None,
                    "lr": ft.lr if ft else None, "seed": ft.seed if ft else None})
    # Canonical order (model, checkpoint, variant): the order of models and tasks in the
    # config is no change, so reordering them re-runs no aggregation.
    order = {m: grid.steps(study, m) for m in study.models}
    out.sort(key=lambda r: (r["model"], order[r["model"]].index(r["step"]), r["variant"]))
    return jsonarg({"runs": out, "eval_sets": grid.eval_sets(study)})


def analysis(study: Study) -> str:
    """The ``analysis`` block, plus the GPUs of each multi-GPU fine-tune (GPU-hours table)."""
    return jsonarg({**study.raw["analysis"], "finetune_gpus": grid.finetune_gpus(study)})


def transfer(study: Study) -> str:
    return jsonarg({"runs": population.runs(study),
                    "categories": population.categories(study),
                    "settings": population.settings(study)})


# ----------------------------------------------------------------------- attribution

def attribution_models(study: Study) -> list[str]:
    """Models to trace: attribution.models, default the first model; embedded only."""
    from ckptsweep.errors import ConfigError

    models = study.attribution.models or list(study.models)[:1]
    for m in models:
        if study.models[m].source != "pretrain":
            raise ConfigError("attribution.models", f"{m!r} is not a pre-trained (embedded) "
                              "model; hub models (FTRACE-TREx) are not wired into the "
                              "workflow yet")
    return list(models)


def attribution_steps(study: Study, model: str, slice_: str) -> list[int]:
    """The checkpoints a fact-tracing job reads: the finetune slice fine-tunes the final
    one only (a new earlier step must not re-run it); the pretrain slice sums over all."""
    steps = sorted(int(s) for s in study.models[model].steps)
    return steps if slice_ == "pretrain" else steps[-1:]


def attribution(study: Study, model: str, slice_: str) -> str:
    a = study.attribution
    spec = {"model": model, "slice": slice_, "steps": attribution_steps(study, model, slice_),
            "seed": a.seed, "max_queries": a.max_queries,
            "n_bm25": a.candidates.bm25, "n_same": a.candidates.same_answer,
            "n_random": a.candidates.random, "methods": list(a.methods),
            "tracin": study.raw["attribution"].get("tracin", {}), "device": a.device}
    if slice_ == "finetune":
        spec["finetune"] = study.raw["attribution"].get("finetune", {})
    else:
        spec["pretrain"] = dict(study.raw["models"][model].get("pretrain", {}))
    return jsonarg(spec)

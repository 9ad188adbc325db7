"""The cross-references a JSON schema cannot express, checked at parse time: each error
names the key as the user wrote it."""

from __future__ import annotations

from ckptsweep.data.tasks import TASK_TYPES, task_type
from ckptsweep.study.grid import ablation, eval_plan, eval_sets
from ckptsweep.study.transfer import (
    block,
    categories,
    members,
    scales,
    settings,
    sft_variants,
)


def check(config: dict) -> None:
    """Cross-references between config blocks; raise ValueError naming the key."""
    datasets = config["datasets"]
    for name, d in datasets.items():
        if (d.get("source", "world") == "hub") != ("hub" in d):
            raise ValueError(f"datasets.{name}.hub: required exactly when source is hub")
        if "train_fraction" in d and "n_train" in d:
            raise ValueError(f"datasets.{name}: n_train and train_fraction exclude each other")
        if d["task"] not in TASK_TYPES:
            raise ValueError(f"datasets.{name}.task: unknown task type {d['task']!r}; "
                             f"known: {sorted(TASK_TYPES)}")
        ev = d.get("eval")
        if ev and ev.get("of") is not None and ev["of"] not in datasets:
            raise ValueError(f"datasets.{name}.eval.of: {ev['of']!r} is not a dataset")
        for trained, words in ((ev or {}).get("answer_words") or {}).items():
            labels = task_type(d["task"]).labels
            if sorted(words) != sorted(labels):
                raise ValueError(f"datasets.{name}.eval.answer_words.{trained}: needs exactly "
                                 f"the set's labels {list(labels)}, got {sorted(words)}")
        if ev:
            have = task_type(d["task"]).formats
            for fmt in ev.get("formats", ["default"]):
                if fmt not in have:
                    raise ValueError(f"datasets.{name}.eval.formats: task type {d['task']!r} "
                                     f"has no format {fmt!r}; it has {list(have)}")
    for dataset in (config.get("finetune", {}).get("tasks") or {}):
        if dataset not in datasets:
            raise ValueError(f"finetune.tasks.{dataset}: not a dataset (datasets has "
                             f"{sorted(datasets)})")
        if task_type(datasets[dataset]["task"]).kind == "multiple_choice":
            raise ValueError(f"finetune.tasks.{dataset}: multiple-choice benchmarks are "
                             "evaluated only")
    tasks = config.get("finetune", {}).get("tasks") or {}
    for model, m in config["models"].items():
        for dataset in m.get("finetune") or []:
            if dataset not in tasks:
                raise ValueError(f"models.{model}.finetune: {dataset!r} is not in "
                                 f"finetune.tasks ({sorted(tasks)})")
        if m["source"] == "hub":
            steps_without = [s for s in m["steps"]
                             if not m.get("repo") and s not in (m.get("repos") or {})]
            if steps_without:
                raise ValueError(f"models.{model}: a hub model needs `repo` (or `repos` for "
                                 f"steps {steps_without})")
            extra = [k for k in ("refs", "repos") for s in (m.get(k) or {})
                     if int(s) not in m["steps"]]
            if extra:
                raise ValueError(f"models.{model}.{extra[0]}: names a step that is not in "
                                 f"models.{model}.steps {m['steps']}")
        if m["source"] == "pretrain":
            if "pretrain" not in m:
                raise ValueError(f"models.{model}.pretrain: required for source pretrain")
            kept = set(m["pretrain"].get("checkpoints", m["steps"]))
            missing = [s for s in m["steps"] if s not in kept]
            if missing:
                raise ValueError(f"models.{model}.steps: {missing} are not saved by "
                                 f"models.{model}.pretrain.checkpoints")
    for model, m in config["models"].items():
        for name in m.get("eval_sets") or []:
            if name not in eval_sets(config):
                raise ValueError(f"models.{model}.eval_sets: {name!r} is not an eval set "
                                 f"(datasets with an eval block: {sorted(eval_sets(config))})")
    for model in config.get("analysis", {}).get("models") or []:
        if model not in config["models"]:
            raise ValueError(f"analysis.models: {model!r} is not a model "
                             f"(models has {sorted(config['models'])})")
    check_transfer(config)
    block = config.get("analysis", {}).get("ablation")
    if block is not None:
        sets = eval_sets(config)
        for name in block.get("eval_sets") or []:
            if name not in sets or sets[name]["kind"] != "classification":
                raise ValueError(f"analysis.ablation.eval_sets: {name!r} is not a "
                                 "classification eval set; those are " + str(sorted(
                                     n for n, s in sets.items()
                                     if s["kind"] == "classification")))
        if not ablation(config)["eval_sets"]:
            raise ValueError("analysis.ablation.eval_sets: no classification in-domain "
                             "eval set to default to; name the sets")
    groups = config.get("analysis", {}).get("groups", {})
    for group, pairs in groups.items():
        for i, pair in enumerate(pairs):
            for key in ("eval", "train"):
                if pair[key] not in datasets and not (key == "train" and pair[key] == "*"):
                    raise ValueError(f"analysis.groups.{group}[{i}].{key}: {pair[key]!r} is "
                                     "not a dataset" + (" (or '*': every fine-tune)"
                                                        if key == "train" else ""))


def check_transfer(config: dict) -> None:
    """Cross-references of the ``transfer`` block; raise ValueError naming the key."""
    t = block(config)
    if t is None:
        return
    models = config["models"]
    sets = eval_sets(config)
    tasks = (config.get("finetune") or {}).get("tasks") or {}
    if t["sft"] not in tasks:
        raise ValueError(f"transfer.sft: {t['sft']!r} is not in finetune.tasks "
                         f"({sorted(tasks)})")
    cats = categories(config)
    seen: dict[str, str] = {}
    for cat, names in t["categories"].items():
        for name in names:
            if name in seen:
                raise ValueError(f"transfer.categories.{cat}: {name!r} is already in category "
                                 f"{seen[name]!r}; a benchmark belongs to one category")
            seen[name] = cat
            if name not in sets:
                raise ValueError(f"transfer.categories.{cat}: {name!r} is not an eval set "
                                 f"(datasets with an eval block: {sorted(sets)})")
            if sets[name]["kind"] not in ("multiple_choice", "classification"):
                raise ValueError(f"transfer.categories.{cat}: {name!r} is a "
                                 f"{sets[name]['kind']} set; confidence needs per-label "
                                 "probabilities (multiple choice or classification)")
    shots = settings(config)["shots"]
    if shots not in config["evaluation"]["shots"]:
        raise ValueError(f"transfer.shots: {shots} is not in evaluation.shots "
                         f"{config['evaluation']['shots']}")
    for model, m in t["models"].items():
        where = f"transfer.models.{model}"
        if model not in models:
            raise ValueError(f"{where}: not a model (models has {sorted(models)})")
        bad = [s for s in m.get("steps") or [] if s not in models[model]["steps"]]
        if bad:
            raise ValueError(f"{where}.steps: {bad} are not in models.{model}.steps "
                             f"{models[model]['steps']}")
        if not sft_variants(config, model):
            raise ValueError(f"{where}: models.{model} has no fine-tune of transfer.sft "
                             f"({t['sft']!r}); check models.{model}.finetune")
        for variant in ["base", *sft_variants(config, model)]:
            plan = eval_plan(config, variant, model)
            missing = [n for n in cats if n not in plan]
            if missing:
                raise ValueError(f"{where}: variant {variant!r} is not evaluated on {missing} "
                                 f"(see models.{model}.eval_sets and the datasets' eval roles)")
            fmt = settings(config)["format"]
            nofmt = [n for n in cats if fmt not in plan[n]]
            if nofmt:
                raise ValueError(f"transfer.format: {fmt!r} is not evaluated on {nofmt}")
    order = scales(config)
    used = {str(m["scale"]) for m in t["models"].values()}
    if set(order) != used:
        raise ValueError(f"transfer.scales: {order} must list exactly the scales of "
                         f"transfer.models ({sorted(used)})")
    need = settings(config)["min_members"]
    for scale in order:
        n = sum(1 for m in members(config) if m["scale"] == scale)
        if n < need:
            raise ValueError(f"transfer.models: scale {scale!r} has {n} members (checkpoints); "
                             f"rank correlations need at least {need} (transfer.min_members)")

"""The study grid, derived from a validated config: which fine-tunes and evaluations exist.

The Snakefile's input functions call these, and so do the tests, so the grid that a dry
run shows is the grid that is tested. The JSON schema checks each key's type; `check`
adds the cross-references a schema cannot express, naming the offending key.
"""

from __future__ import annotations

from .tasks import TASK_TYPES, task_type


def fmt_lr(lr: float) -> str:
    """2e-06 -> "2e-6", 0.001 -> "1e-3": short, stable and unique in file names."""
    mantissa, exp = f"{lr:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def ft_name(dataset: str, lr: float, seed: int) -> str:
    """A fine-tune's complete name: train dataset, learning rate and seed."""
    return f"{dataset}-lr{fmt_lr(lr)}-s{seed}"


def finetunes(config: dict, model: str | None = None) -> list[dict]:
    """Every fine-tune of one checkpoint: {name, dataset, task, lr, seed, settings}.

    With ``model``, only the training datasets that ``models.<model>.finetune`` lists
    (default: every ``finetune.tasks`` entry), with ``models.<model>.finetune_settings``
    over the defaults and the task's own settings (Llama-3-8B's Appendix F settings)."""
    ft = config.get("finetune", {})
    defaults = ft.get("defaults", {})
    only = None if model is None else config["models"][model].get("finetune")
    mine = {} if model is None else config["models"][model].get("finetune_settings") or {}
    out = []
    for dataset, over in (ft.get("tasks") or {}).items():
        if only is not None and dataset not in only:
            continue
        settings = {**defaults, **(over or {}), **mine}
        for lr in settings["lr"]:
            for seed in settings["seeds"]:
                out.append({"name": ft_name(dataset, lr, seed), "dataset": dataset,
                            "task": config["datasets"][dataset]["task"], "lr": lr,
                            "seed": seed, "settings": settings})
    return out


def finetune(config: dict, name: str, model: str | None = None) -> dict:
    """The fine-tune called ``name`` (of ``model`` when given: its settings may differ)."""
    pools = ([finetunes(config, model)] if model is not None else
             [finetunes(config), *(finetunes(config, m) for m in config["models"])])
    for pool in pools:
        for f in pool:
            if f["name"] == name:
                return f
    raise KeyError(f"no fine-tune named {name!r} in the config")


def finetune_gpus(config: dict) -> dict[str, int]:
    """``{model}/{fine-tune}`` -> GPUs, for every fine-tune set to more than one GPU (its
    ``gpus`` setting): what the GPU-hours table counts for it instead of the rule's
    ``analysis.gpus_per_job.finetune``."""
    return {f"{model}/{f['name']}": int(f["settings"]["gpus"])
            for model in config.get("models", {}) for f in finetunes(config, model)
            if int(f["settings"].get("gpus", 1)) > 1}


def eval_sets(config: dict) -> dict[str, dict]:
    """Datasets with an ``eval`` block: {name: {task, kind, of, role_in, formats, n}}."""
    out = {}
    for name, d in config["datasets"].items():
        ev = d.get("eval")
        if ev is None:
            continue
        out[name] = {"task": d["task"], "kind": task_type(d["task"]).kind,
                     "of": ev.get("of"), "role_in": ev.get("role"),
                     "formats": ev.get("formats", ["default"]), "n": d.get("n_test")}
    return out


def answer_words(config: dict, variant: str, model: str | None,
                 eval_set: str) -> dict[str, list[str]] | None:
    """The words each label of ``eval_set`` is scored as for ``variant``: the set's
    ``eval.answer_words`` entry for the task type the variant was fine-tuned on, if any
    (None: the set's own label words; always for the base model)."""
    if variant == "base":
        return None
    trained = finetune(config, variant, model)["task"]
    ev = config["datasets"][eval_set].get("eval") or {}
    return (ev.get("answer_words") or {}).get(trained)


def eval_plan(config: dict, variant: str, model: str | None = None) -> dict[str, list[str]]:
    """Eval set -> prompt formats evaluated for one model variant.

    As in the paper: the base model is evaluated on every set in every format; a task
    fine-tune on the task sets (in-domain, OOD, cross-task), in the extra formats only on
    its own in-domain set (the format analysis, Figure 5); an instruction-tuned model
    (chat data, the paper's Tulu) on the benchmarks. This keeps the grid's cost linear in
    the formats and spends nothing on evaluations no analysis reads. With ``model``, only
    the sets that ``models.<model>.eval_sets`` lists (default: all; the transfer
    population's members need only its benchmarks).
    """
    ft = None if variant == "base" else finetune(config, variant, model)
    chat = ft is not None and task_type(ft["task"]).kind == "chat"
    only = None if model is None else config["models"][model].get("eval_sets")
    plan = {}
    for name, s in eval_sets(config).items():
        if only is not None and name not in only:
            continue
        benchmark = s["role_in"] == "benchmark"
        if ft is not None and benchmark != chat:
            continue
        mine = ft is None or (s["of"] == ft["dataset"] and s["role_in"] == "id")
        plan[name] = s["formats"] if mine else ["default"]
    return plan


def variants(config: dict, model: str | None = None) -> list[str]:
    """Model variants evaluated at every checkpoint of ``model``: the base model, then
    each of its fine-tunes."""
    return ["base", *[f["name"] for f in finetunes(config, model)]]


def steps(config: dict, model: str) -> list[str]:
    return [str(s) for s in config["models"][model]["steps"]]


def analysis_models(config: dict) -> list[str]:
    """Models whose evaluations form the scores table and the AMURO & CHAR tables:
    ``analysis.models`` (default every model), so a transfer population listed under
    ``models`` leaves those tables as they are."""
    return list(config.get("analysis", {}).get("models") or config["models"])


def final_step(config: dict, model: str) -> str:
    """The final checkpoint of a model: the largest of its ``steps``."""
    return str(max(config["models"][model]["steps"]))


# The AMURO & CHAR outputs, named here (not in tables/figures, which import pandas and
# matplotlib) because the workflow reads them at parse time, once per Slurm job.
TABLE_NAMES = ("mrc_cross_task", "mrc_ood", "mrc_format", "format_perf", "perf_steps",
               "pt_ft_groups", "pt_ft_groups_data", "group_membership", "base_trend",
               "ft_vs_base", "forgetting")
"""Each is written as ``{name}.csv`` and ``{name}.html``; ``summary.json`` comes with them."""
FIGURE_NAMES = ("base_steps", "perf_steps_id", "perf_steps_ood", "perf_steps_benchmark",
                "perf_steps_cross_task", "group_gain", "formats", "mrc_ood", "mrc_cross_task")
"""First file of each figure; extra panels spill into ``{name}-2`` etc."""

ABLATION_METHODS = ("free", "constrained", "tokenprob", "loglik")
"""Default methods of the prediction-method ablation (``evaluate.METHODS``, paper order)."""


def ablation(config: dict, model: str | None = None) -> dict | None:
    """The prediction-method ablation (the paper's Table 2), or None without an
    ``analysis.ablation`` block: {methods, eval_sets, variants} (the variants of
    ``model`` when given).

    ``eval_sets`` defaults to the in-domain sets of classification tasks. ``variants``
    lists the base model, evaluated on every ablation set, then each fine-tune whose
    training dataset is some ablation set's ``of``, evaluated on the sets whose ``of`` it
    was trained on: [{"name", "sets"}]. The checkpoint is each model's `final_step`."""
    block = config.get("analysis", {}).get("ablation")
    if block is None:
        return None
    sets = eval_sets(config)
    names = list(block.get("eval_sets") or
                 [n for n, s in sets.items() if s["kind"] == "classification"
                  and s["role_in"] == "id"])
    variants = [{"name": "base", "sets": names}]
    for f in finetunes(config, model):
        own = [n for n in names if sets[n]["of"] == f["dataset"]]
        if own:
            variants.append({"name": f["name"], "sets": own})
    return {"methods": list(block.get("methods") or ABLATION_METHODS), "eval_sets": names,
            "variants": variants}


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
    from .transfer_config import check as check_transfer  # it imports this module

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

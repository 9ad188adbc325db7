"""The study grid, derived from a validated config: which fine-tunes and evaluations exist.

The Snakefile's input functions call these, and so do the tests, so the grid that a dry
run shows is the grid that is tested. The JSON schema checks each key's type; `check`
adds the cross-references a schema cannot express, naming the offending key.
"""

from __future__ import annotations

from ckptsweep.analysis.names import ABLATION_METHODS
from ckptsweep.data.tasks import task_type


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

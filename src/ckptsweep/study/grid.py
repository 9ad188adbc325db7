"""The study grid, derived from the typed study: which fine-tunes and evaluations exist.

The Snakefile's input functions call these, and so do the tests, so the grid that a dry
run shows is the grid that is tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckptsweep.data.tasks import task_type
from ckptsweep.study.config import MEM_MB_PER_PROCESS, Study
from ckptsweep.train.config import FinetuneConfig


def fmt_lr(lr: float) -> str:
    """2e-06 -> "2e-6", 0.001 -> "1e-3": short, stable and unique in file names."""
    mantissa, exp = f"{lr:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def ft_name(dataset: str, lr: float, seed: int) -> str:
    """A fine-tune's complete name: train dataset, learning rate and seed."""
    return f"{dataset}-lr{fmt_lr(lr)}-s{seed}"


@dataclass(frozen=True)
class Finetune:
    """One fine-tune of a checkpoint (the same for every checkpoint of its model)."""

    name: str
    """Its complete name (`ft_name`), the ``{ft}`` of its folder."""
    dataset: str
    """Training dataset."""
    task: str
    """The training dataset's task type."""
    lr: float
    """Its learning rate (one of the settings' ``lr`` list)."""
    seed: int
    """Its seed (one of the settings' ``seeds``)."""
    settings: Mapping[str, Any]
    """The settings as written: ``finetune.defaults``, then the task's, then the model's
    ``finetune_settings`` over them (``lr`` and ``seeds`` still lists)."""

    @property
    def gpus(self) -> int:
        """GPUs (processes) of the job: the ``gpus`` setting."""
        return int(self.settings.get("gpus", FinetuneConfig.gpus))

    @property
    def mem_mb(self) -> int:
        """Host memory (MB) per process: the ``mem_mb`` setting."""
        return int(self.settings.get("mem_mb", MEM_MB_PER_PROCESS))


def finetunes(study: Study, model: str | None = None) -> list[Finetune]:
    """Every fine-tune of one checkpoint.

    With ``model``, only the training datasets that ``models.<model>.finetune`` lists
    (default: every ``finetune.tasks`` entry), with ``models.<model>.finetune_settings``
    over the defaults and the task's own settings (Llama-3-8B's Appendix F settings)."""
    m = None if model is None else study.models[model]
    only = None if m is None else m.finetune
    mine = {} if m is None else m.finetune_settings
    out = []
    for dataset, over in study.finetune.tasks.items():
        if only is not None and dataset not in only:
            continue
        settings = {**study.finetune.defaults, **over, **mine}
        for lr in settings["lr"]:
            for seed in settings["seeds"]:
                out.append(Finetune(ft_name(dataset, lr, seed), dataset,
                                    study.datasets[dataset].task, lr, seed, settings))
    return out


def finetune(study: Study, name: str, model: str | None = None) -> Finetune:
    """The fine-tune called ``name`` (of ``model`` when given: its settings may differ)."""
    pools = ([finetunes(study, model)] if model is not None else
             [finetunes(study), *(finetunes(study, m) for m in study.models)])
    for pool in pools:
        for f in pool:
            if f.name == name:
                return f
    raise KeyError(f"no fine-tune named {name!r} in the config")


def finetune_gpus(study: Study) -> dict[str, int]:
    """``{model}/{fine-tune}`` -> GPUs, for every fine-tune set to more than one GPU (its
    ``gpus`` setting): what the GPU-hours table counts for it instead of the rule's
    ``analysis.gpus_per_job.finetune``."""
    return {f"{model}/{f.name}": f.gpus for model in study.models
            for f in finetunes(study, model) if f.gpus > 1}


def eval_sets(study: Study) -> dict[str, dict]:
    """Datasets with an ``eval`` block: {name: {task, kind, of, role_in, formats, n}} (the
    aggregation's spec carries this dict)."""
    return {name: {"task": d.task, "kind": task_type(d.task).kind, "of": d.eval.of,
                   "role_in": d.eval.role, "formats": list(d.eval.formats), "n": d.n_test}
            for name, d in study.datasets.items() if d.eval is not None}


def answer_words(study: Study, variant: str, model: str | None,
                 eval_set: str) -> dict[str, list[str]] | None:
    """The words each label of ``eval_set`` is scored as for ``variant``: the set's
    ``eval.answer_words`` entry for the task type the variant was fine-tuned on, if any
    (None: the set's own label words; always for the base model)."""
    if variant == "base":
        return None
    trained = finetune(study, variant, model).task
    ev = study.datasets[eval_set].eval
    return None if ev is None else ev.answer_words.get(trained)


def eval_plan(study: Study, variant: str, model: str | None = None) -> dict[str, list[str]]:
    """Eval set -> prompt formats evaluated for one model variant.

    As in the paper: the base model is evaluated on every set in every format; a task
    fine-tune on the task sets (in-domain, OOD, cross-task), in the extra formats only on
    its own in-domain set (the format analysis, Figure 5); an instruction-tuned model
    (chat data, the paper's Tulu) on the benchmarks. This keeps the grid's cost linear in
    the formats and spends nothing on evaluations no analysis reads. With ``model``, only
    the sets that ``models.<model>.eval_sets`` lists (default: all; the transfer
    population's members need only its benchmarks).
    """
    ft = None if variant == "base" else finetune(study, variant, model)
    chat = ft is not None and task_type(ft.task).kind == "chat"
    only = None if model is None else study.models[model].eval_sets
    plan = {}
    for name, s in eval_sets(study).items():
        if only is not None and name not in only:
            continue
        benchmark = s["role_in"] == "benchmark"
        if ft is not None and benchmark != chat:
            continue
        mine = ft is None or (s["of"] == ft.dataset and s["role_in"] == "id")
        plan[name] = s["formats"] if mine else ["default"]
    return plan


def variants(study: Study, model: str | None = None) -> list[str]:
    """Model variants evaluated at every checkpoint of ``model``: the base model, then
    each of its fine-tunes."""
    return ["base", *[f.name for f in finetunes(study, model)]]


def steps(study: Study, model: str) -> list[str]:
    """The checkpoints of ``model`` (the ``{step}`` of file names), in config order."""
    return [str(s) for s in study.models[model].steps]


def analysis_models(study: Study) -> list[str]:
    """Models whose evaluations form the scores table and the AMURO & CHAR tables:
    ``analysis.models`` (default every model), so a transfer population listed under
    ``models`` leaves those tables as they are."""
    return list(study.analysis.models or study.models)


def final_step(study: Study, model: str) -> str:
    """The final checkpoint of a model: the largest of its ``steps``."""
    return str(max(study.models[model].steps))


def ablation(study: Study, model: str | None = None) -> dict | None:
    """The prediction-method ablation (the paper's Table 2), or None without an
    ``analysis.ablation`` block: {methods, eval_sets, variants} (the variants of
    ``model`` when given).

    ``eval_sets`` defaults to the in-domain sets of classification tasks. ``variants``
    lists the base model, evaluated on every ablation set, then each fine-tune whose
    training dataset is some ablation set's ``of``, evaluated on the sets whose ``of`` it
    was trained on: [{"name", "sets"}]. The checkpoint is each model's `final_step`."""
    block = study.analysis.ablation
    if block is None:
        return None
    sets = eval_sets(study)
    names = list(block.eval_sets or
                 [n for n, s in sets.items() if s["kind"] == "classification"
                  and s["role_in"] == "id"])
    variants = [{"name": "base", "sets": names}]
    for f in finetunes(study, model):
        own = [n for n in names if sets[n]["of"] == f.dataset]
        if own:
            variants.append({"name": f.name, "sets": own})
    return {"methods": list(block.methods), "eval_sets": names, "variants": variants}

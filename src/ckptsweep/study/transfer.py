"""The cross-stage transfer population (config block ``transfer``), at parse time.

Which models and checkpoints form the population, with which mixture and scale labels,
which benchmarks (in which capability categories) are compared before and after SFT, and
which predictions files hold each member's two stages.

A *member* is one checkpoint (``model`` x ``step``) of a ``transfer.models`` entry. Its
*pre* stage is the ``base`` variant; its *post* stage is every fine-tune of the
``transfer.sft`` dataset (several seeds or learning rates are averaged per example, like
the AMURO & CHAR tables' seed-mean model). Both stages are produced by the ordinary
finetune and evaluate rules, so every member is treated exactly alike.
"""

from __future__ import annotations

from ckptsweep.study.config import Study
from ckptsweep.study.grid import finetunes

STAGES = ("pre", "post")


def settings(study: Study) -> dict:
    """The analysis settings the transfer tables read (``shots``: ``transfer.shots``,
    else ``analysis.shots``, else the smallest ``evaluation.shots``)."""
    t = study.transfer
    shots = t.shots if t.shots is not None else study.analysis.shots
    if shots is None:
        shots = min(study.evaluation.shots)
    return {"format": t.format, "ece_bins": t.ece_bins, "n_boot": t.n_boot, "seed": t.seed,
            "alpha": t.alpha, "min_members": t.min_members, "shots": int(shots),
            "sft": t.sft, "scales": scales(study)}


def categories(study: Study) -> dict[str, str]:
    """Benchmark (eval set) -> its capability category, in config order."""
    if study.transfer is None:
        return {}
    return {name: cat for cat, names in study.transfer.categories.items() for name in names}


def scales(study: Study) -> list[str]:
    """Scale labels, smallest first: ``transfer.scales`` or the order of first appearance."""
    t = study.transfer
    seen = list(dict.fromkeys(str(m.scale) for m in t.models.values()))
    return [str(s) for s in t.scales or seen]


def members(study: Study) -> list[dict]:
    """Every member: {member, model, step, mixture, scale}, in config order."""
    out = []
    for model, m in (study.transfer.models if study.transfer else {}).items():
        for step in [str(s) for s in m.steps or study.models[model].steps]:
            out.append({"member": f"{model}@{step}", "model": model, "step": step,
                        "mixture": str(m.mixture), "scale": str(m.scale)})
    return out


def sft_variants(study: Study, model: str) -> list[str]:
    """Names of ``model``'s fine-tunes of the SFT dataset (the post-SFT stage)."""
    return [f.name for f in finetunes(study, model) if f.dataset == study.transfer.sft]


def runs(study: Study) -> list[dict]:
    """Every predictions file the analysis reads: member fields + stage, variant, path."""
    out = []
    for m in members(study):
        for stage, variant in [("pre", "base"),
                               *(("post", v) for v in sft_variants(study, m["model"]))]:
            out.append({**m, "stage": stage, "variant": variant,
                        "path": f"results/predictions/{m['model']}/{m['step']}/{variant}.parquet"})
    return out

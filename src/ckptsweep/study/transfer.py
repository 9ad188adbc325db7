"""The cross-stage transfer population (config block ``transfer``), without heavy imports.

The Snakefile reads this at parse time, so it is plain Python: which models and
checkpoints form the population, with which mixture and scale labels, which benchmarks (in
which capability categories) are compared before and after SFT, and which predictions
files hold each member's two stages. ``check`` adds the cross-references the JSON schema
cannot express, naming the offending key.

A *member* is one checkpoint (``model`` x ``step``) of a ``transfer.models`` entry. Its
*pre* stage is the ``base`` variant; its *post* stage is every fine-tune of the
``transfer.sft`` dataset (``finetunes(config, model)``; several seeds or learning rates are
averaged per example, like tables.py's seed-mean model). Both stages are produced by the
ordinary finetune and evaluate rules, so every member is treated exactly alike.
"""

from __future__ import annotations

from ckptsweep.study import grid as study

DEFAULTS = {"format": "default", "ece_bins": 10, "n_boot": 1000, "seed": 0, "alpha": 0.05,
            "min_members": 3}
"""Settings of the ``transfer`` block that have defaults (``shots`` defaults to
``analysis.shots``, else the smallest ``evaluation.shots``)."""
STAGES = ("pre", "post")


def block(config: dict) -> dict | None:
    """The ``transfer`` block, or None: then no transfer rule runs."""
    return config.get("transfer")


def settings(config: dict) -> dict:
    """The analysis settings with their defaults filled in."""
    t = block(config) or {}
    shots = t.get("shots", config.get("analysis", {}).get("shots"))
    if shots is None:
        shots = min(config["evaluation"]["shots"])
    out = {k: t.get(k, v) for k, v in DEFAULTS.items()}
    out.update({"shots": int(shots), "sft": t.get("sft"), "scales": scales(config)})
    return out


def categories(config: dict) -> dict[str, str]:
    """Benchmark (eval set) -> its capability category, in config order."""
    return {name: cat for cat, names in (block(config) or {}).get("categories", {}).items()
            for name in names}


def scales(config: dict) -> list[str]:
    """Scale labels, smallest first: ``transfer.scales`` or the order of first appearance."""
    t = block(config) or {}
    seen = list(dict.fromkeys(str(m["scale"]) for m in (t.get("models") or {}).values()))
    return [str(s) for s in t.get("scales") or seen]


def members(config: dict) -> list[dict]:
    """Every member: {member, model, step, mixture, scale}, in config order."""
    out = []
    for model, m in ((block(config) or {}).get("models") or {}).items():
        steps = [str(s) for s in m.get("steps") or config["models"][model]["steps"]]
        for step in steps:
            out.append({"member": f"{model}@{step}", "model": model, "step": step,
                        "mixture": str(m["mixture"]), "scale": str(m["scale"])})
    return out


def sft_variants(config: dict, model: str) -> list[str]:
    """Names of ``model``'s fine-tunes of the SFT dataset (the post-SFT stage)."""
    sft = (block(config) or {}).get("sft")
    return [f["name"] for f in study.finetunes(config, model) if f["dataset"] == sft]


def runs(config: dict) -> list[dict]:
    """Every predictions file the analysis reads: member fields + stage, variant, path."""
    out = []
    for m in members(config):
        for stage, variant in [("pre", "base"),
                               *(("post", v) for v in sft_variants(config, m["model"]))]:
            out.append({**m, "stage": stage, "variant": variant,
                        "path": f"results/predictions/{m['model']}/{m['step']}/{variant}.parquet"})
    return out

"""The guard against redoing finished expensive work by accident.

A changed setting can make Snakemake redo finished pre-trainings, fine-tunes and
evaluations: a sweep of a thousand GPU-hours must not lose them to a typo. At parse time
(dry runs too) `summary` counts the finished expensive jobs whose spec changed, and those
below them, and names the changed keys; a real run stops before any job unless
``confirm_rerun: true`` (``--config confirm_rerun=True``). A study finished by an earlier
ckptsweep that needs `ckptsweep migrate` is said so too.

Growing a study is not redoing it: an evaluation job whose spec only gained variants or
eval sets re-runs with its finished predictions served from the prediction cache, so it
does not count.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ckptsweep.operate.migrate import EQUIVALENT, plan, record, recorded_spec
from ckptsweep.study.config import Study

EXPENSIVE = ("pretrain", "finetune", "evaluate", "ablation", "attribute")
"""The rules whose jobs cost GPU-hours."""


def rule_of(output: str) -> str:
    """The rule of an expensive output, from its path."""
    parts = output.split("/")
    return {"pretrained": "pretrain", "models": "finetune", "predictions": "evaluate",
            "ablation": "ablation", "attribution": "attribute"}[parts[1]]


def summary(study: Study, root: Path, configfile: str = "FILE") -> tuple[str, bool]:
    """(a message, whether a real run must stop) for the finished expensive jobs this
    run would redo; ("", False) when there are none."""
    p = plan(study, root)
    p.rerun = {out: why for out, why in p.rerun.items()
               if not (why.startswith("its spec") and _grows(root, out, study))}
    lines = []
    if p.rerun:
        counts = Counter(rule_of(out) for out in p.rerun)
        direct = {out: why for out, why in p.rerun.items() if why.startswith("its spec")}
        lines.append("ckptsweep: this run would redo finished expensive jobs: "
                     + ", ".join(f"{counts[r]} {r}" for r in EXPENSIVE if counts[r])
                     + f" ({len(direct)} because their settings changed, the rest below "
                       "them)")
        for out, why in sorted(direct.items())[:10]:
            lines.append(f"  {out}: {why}")
        if len(direct) > 10:
            lines.append(f"  ... and {len(direct) - 10} more")
    legacy = [out for out in p.current if _needs_migration(root, out)]
    if legacy:
        lines.append(f"ckptsweep: {len(legacy)} finished expensive jobs were made by an "
                     "earlier ckptsweep and would be redone although their results would "
                     f"not change: run `ckptsweep migrate --configfile {configfile}` first")
    if not lines:
        return "", False
    lines.append("A real run stops here. To redo them anyway, add "
                 "`--config confirm_rerun=True`.")
    return "\n".join(lines), True


def _grows(root: Path, output: str, study: Study) -> bool:
    """An evaluation or ablation whose spec only gained variants or eval sets (everything
    it scored before is still scored the same way, and comes from the cache)."""
    import json

    from ckptsweep.study import specs

    rule = rule_of(output)
    if rule not in ("evaluate", "ablation"):
        return False
    old = recorded_spec(record(root, output))
    old = None if old is None else EQUIVALENT[rule](old)
    if rule == "evaluate":
        model, step = output.split("/")[2:4]
        new = json.loads(specs.evaluate(study, model, step))
    else:
        new = json.loads(specs.ablation(study, Path(output).stem))
    if old is None or old.get("evaluation") != new["evaluation"] or any(
            s not in new.get("sets", []) for s in old.get("sets", [])) or old.get(
            "methods") != new.get("methods"):
        return False
    now = {v["name"]: v for v in new["variants"]}
    for v in old.get("variants", []):
        mine = now.get(v["name"])
        if mine is None or mine["model"] != v["model"] or any(
                s not in mine["sets"] for s in v["sets"]):
            return False
    return True


def _needs_migration(root: Path, output: str) -> bool:
    """A finished output with no record of its own job, or of the old grain's (one
    pre-training per model), or recorded before the prediction cache: Snakemake would
    redo it for its inputs or code although its spec is unchanged."""
    rec = record(root, output)
    if rec is None:
        return True
    if rule_of(output) in ("evaluate", "ablation"):
        return not any("resources/cache/predictions" in p for p in rec.get("params") or [])
    return any(f.startswith("resources/checkpoints/") and f.endswith(".tsv")
               and f.count("/") == 2 for f in rec.get("input") or [])

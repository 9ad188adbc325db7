"""`ckptsweep migrate`: keep a finished study finished across a change of dependency grain.

One pre-training job and one checkpoint manifest per step (instead of one per model), the
prediction cache of the evaluation jobs and the variants' order in their specs make
Snakemake see changed inputs, params or code on a study finished before them, so a plain
run would redo every pre-training, fine-tune and evaluation although their results would
not change. This command proves, job by job, that the finished result is the one the
new job would compute, and marks exactly those outputs current:

1. each expensive job whose outputs exist: its spec as Snakemake recorded it (in
   ``.snakemake/metadata``) against the spec it has now, up to what cannot change a
   result (`EQUIVALENT`); a job is current only if every job upstream of it is too;
2. the cheap new jobs (tokenizers, per-step manifests, hub downloads) run for real;
3. ``snakemake --touch`` on the current outputs writes their new records (no byte of a
   result changes; the outputs' times are touched).

Anything else is left to run, and said so. Run it once, from the project root, with the
study's config; ``--dry-run`` says what it would do.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from pathlib import Path

from ckptsweep.study import grid, specs
from ckptsweep.study.config import Study


def record(root: Path, output: str) -> dict | None:
    """Snakemake's metadata record of ``output`` (its file layout: the path's url-safe
    base64, cut in pieces of the file system's name limit, all but the last prefixed @)."""
    key = urlsafe_b64encode(output.encode()).decode()
    limit = 254
    parts = [key[i:i + limit] for i in range(0, len(key), limit)]
    path = root / ".snakemake" / "metadata" / Path(*["@" + p for p in parts[:-1]], parts[-1])
    return json.loads(path.read_text()) if path.exists() else None


def recorded_spec(rec: dict | None) -> dict | None:
    """The ``--spec`` JSON among a record's params (each stored as its repr)."""
    for value in (rec or {}).get("params") or []:
        try:
            text = ast.literal_eval(value)
            spec = json.loads(text) if isinstance(text, str) else None
        except (ValueError, SyntaxError):
            continue
        if isinstance(spec, dict):
            return spec
    return None


def _runtime_dropped(spec: dict) -> dict:
    """An evaluation or ablation spec without the batch policy (now a resource: how a job
    runs, not what it computes)."""
    ev = {k: v for k, v in spec.get("evaluation", {}).items() if k != "batch_size"}
    return {**spec, "evaluation": ev}


def _sorted_variants(spec: dict) -> dict:
    """An evaluation spec with its variants base first, then by name (their order changes
    nothing; it is how the spec now lists them), without the batch policy."""
    variants = sorted(spec.get("variants", []), key=lambda v: (v["name"] != "base", v["name"]))
    return _runtime_dropped({**spec, "variants": variants})


def _final_step_only(spec: dict) -> dict:
    """A fact-tracing spec of the finetune slice reads the final checkpoint only."""
    return {**spec, "steps": spec["steps"][-1:]} if spec.get("slice") == "finetune" else spec


EQUIVALENT = {"evaluate": _sorted_variants, "ablation": _runtime_dropped,
              "attribute": _final_step_only}
"""Rule -> how an old spec is brought to the form a new spec of the same result has."""


@dataclass
class Plan:
    """What migrating a study does."""

    current: list[str] = field(default_factory=list)
    """Finished outputs whose spec is unchanged: marked current."""
    rerun: dict[str, str] = field(default_factory=dict)
    """Finished outputs that will re-run, and why."""
    cheap: list[str] = field(default_factory=list)
    """New outputs of cheap jobs, run for real."""


def _same(rule: str, old: dict | None, new: str) -> bool:
    if old is None:
        return False
    norm = EQUIVALENT.get(rule, lambda s: s)
    return json.dumps(norm(old), sort_keys=True) == json.dumps(norm(json.loads(new)),
                                                               sort_keys=True)


def changed_keys(old, new, path: str = "") -> list[str]:
    """The spec keys whose values differ (``evaluation.batch_size``, ``epochs``...)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new))
                for k in changed_keys(old.get(key), new.get(key),
                                      f"{path}.{key}" if path else str(key))]
    return [] if old == new else [path or "(the whole spec)"]


def _pretrain_same(root: Path, study: Study, model: str, step: str) -> tuple[bool, list]:
    """Whether a step's folder is the step job's result, and if not which keys changed. A
    folder written by the one pre-training job of its model before the split is, if that
    job ran the same schedule and saved this step."""
    out = specs.pretrained(model, step)
    rec = record(root, out) or record(root, f"resources/pretrained/{model}")
    old = recorded_spec(rec)
    if old is None or not (root / out / "pretrain_info.json").exists():
        return False, []
    new = json.loads(specs.pretrain(study, model, step))
    if "step" in old:  # recorded by a step job already
        return old == new, changed_keys(old, new)
    kept = dict(old.get("pretrain", {}))
    saved = kept.pop("checkpoints", [])
    keys = [f"pretrain.{k}" for k in changed_keys(kept, new["pretrain"])]
    return int(step) in saved and not keys, keys


def plan(study: Study, root: Path) -> Plan:
    """Which finished expensive outputs are current, which will re-run."""
    p = Plan()

    def judge(out: str, rule: str, new_spec: str, upstream_ok: bool) -> bool | None:
        """Whether a finished output is current (None: not made yet, nothing to judge)."""
        if not (root / out).exists():
            return None
        old = recorded_spec(record(root, out))
        if not upstream_ok:
            p.rerun[out] = "a job it depends on re-runs"
        elif not _same(rule, old, new_spec):
            norm = EQUIVALENT.get(rule, lambda x: x)
            keys = changed_keys(norm(old), norm(json.loads(new_spec))) if old else []
            p.rerun[out] = (f"its spec changed: {', '.join(keys[:6])}" if keys
                            else "no record of its spec")
        else:
            p.current.append(out)
            return True
        return False

    base_ok: dict[tuple[str, str], bool] = {}
    for model, m in study.models.items():
        for step in grid.steps(study, model):
            p.cheap.append(specs.manifest(model, step))
            if m.source == "hub":
                p.cheap.append(specs.prefetched(model, step))
                base_ok[model, step] = True
                continue
            out = specs.pretrained(model, step)
            ok, keys = _pretrain_same(root, study, model, step)
            if ok:
                p.current.append(out)
            elif (root / out).exists():
                p.rerun[out] = f"its spec changed: {', '.join(keys[:6]) or 'unknown'}"
            base_ok[model, step] = ok
        if m.source == "pretrain":
            p.cheap.append(specs.tokenizer_folder(study, model))
    for model in study.models:
        fts = grid.finetunes(study, model)
        for step in grid.steps(study, model):
            ft_ok = [judge(specs.finetuned(model, step, f.name), "finetune",
                           specs.finetune(study, model, f.name), base_ok[model, step])
                     for f in fts]
            judge(f"results/predictions/{model}/{step}", "evaluate",
                  specs.evaluate(study, model, step),
                  base_ok[model, step] and all(ok is not False for ok in ft_ok))
        if study.analysis.ablation is not None and model in grid.analysis_models(study):
            final = grid.final_step(study, model)
            judge(f"results/ablation/{model}.parquet", "ablation",
                  specs.ablation(study, model), base_ok[model, final]
                  and all(f in p.current or not (root / f).exists()
                          for f in (specs.finetuned(model, final, v["name"])
                                    for v in grid.ablation(study, model)["variants"][1:])))
    if study.attribution is not None:
        for model in specs.attribution_models(study):
            for slc in study.attribution.slices:
                steps = specs.attribution_steps(study, model, slc)
                judge(f"results/attribution/{model}/{slc}", "attribute",
                      specs.attribution(study, model, slc),
                      all(base_ok[model, str(s)] for s in steps))
    p.cheap = [c for c in dict.fromkeys(p.cheap) if not (root / c).exists()]
    return p


def migrate(configfile: str, root: Path, cores: int = 2, dry_run: bool = False,
            log=print) -> Plan:
    """Plan, run the cheap new jobs, then touch the current outputs (see the module)."""
    import yaml

    from ckptsweep.study.config import load

    study = Study.from_config(load(yaml.safe_load(Path(configfile).read_text())),
                              validated=True)
    p = plan(study, root)
    log(f"{len(p.current)} finished outputs have unchanged specs: marked current")
    for out, why in sorted(p.rerun.items()):
        log(f"will re-run: {out} ({why})")
    log(f"{len(p.cheap)} new cheap outputs (tokenizers, manifests, downloads) to make")
    if dry_run:
        for out in p.current:
            log(f"current: {out}")
        return p
    # confirm_rerun: the guard would stop the touches of the jobs this command proved.
    smk = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores),
           "--configfile", configfile, "--config", "confirm_rerun=True"]
    # In the DAG's order, so that no expensive job ever sees an input newer than itself
    # and runs: tokenizers, then the checkpoints made with them, then the manifests and
    # downloads that read those, then everything downstream.
    pretrained = [c for c in p.current if c.startswith("resources/pretrained/")]
    stages = [("run", [c for c in p.cheap if c.startswith("resources/tokenizers/")]),
              ("touch", pretrained),
              ("run", [c for c in p.cheap if not c.startswith("resources/tokenizers/")]),
              ("touch", [c for c in p.current if c not in pretrained])]
    for action, targets in stages:
        if not targets:
            continue
        # Nothing but these targets may run or be touched: a dry run says what would be.
        planned = _dry_run_outputs([*smk[:1], *targets, "-n", *smk[1:]], root)
        extra = sorted(planned - set(targets))
        if extra:
            raise SystemExit(f"error: to {action} {len(targets)} outputs Snakemake would also "
                             f"{action} {extra[:10]}, whose results may differ; stopped "
                             "before that step")
        _run([*smk[:1], *targets, *(["--touch"] if action == "touch" else []), *smk[1:]],
             root)
    log("done: `snakemake -n` now lists only what is new or changed")
    return p


def _dry_run_outputs(cmd: list[str], root: Path) -> set[str]:
    """The outputs of every job a dry run of ``cmd`` lists."""
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {out for line in proc.stdout.splitlines() if line.startswith("    output: ")
            for out in line[len("    output: "):].split(", ")}


def _run(cmd: list[str], root: Path) -> None:
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... failed:\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")

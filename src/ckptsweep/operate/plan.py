"""The cost plan of a study before it is submitted: every job with its GPUs, estimated
wall time and GPU-hours, the time limit the profile gives it, and the disk it fills.

Pure Python over the study (no Snakemake, no network, nothing submitted). The heavy jobs
(pretrain, finetune, evaluate, ablation, attribute) are the grid's own
(`ckptsweep.study.grid`), their work from `workload`, their speed from `throughput`:
seconds = overhead + models loaded x load time + FLOPs / (rate x GPUs). The light jobs
(data preparation, manifests, tables, figures) take the table's fixed seconds. With
``benchmarks`` (a study's ``benchmarks/`` folder), finished jobs of the same rule and
model shape rescale that rule's estimates to what they measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ckptsweep.operate import workload
from ckptsweep.operate.throughput import Rate, job_seconds, rate, table
from ckptsweep.study import advisor, grid, specs
from ckptsweep.study.config import Study
from ckptsweep.study.specs import attribution_models

AUTO_DECODE_BATCH = 64
"""The rows a decoding step is planned with under ``batch_size: auto`` (an assumption: the
token budget fills free memory, at least this many prompts of a study's lengths)."""
HEAVY = ("pretrain", "finetune", "evaluate", "ablation", "attribute", "proxy", "bpb")
LIKE = {"proxy": "finetune", "bpb": "evaluate"}
"""The advisor's jobs take the GPUs of the rule they resemble where none are set."""
KIND = {"pretrain": "pretrain", "finetune": "finetune", "attribute": "attribute"}
"""The rate kind of each heavy rule's work (evaluate and ablation: score and decode)."""
STATE_BYTES = 12
"""Resumable state per parameter: fp32 weights and AdamW's two fp32 moments."""
MODEL_BYTES = 4
"""A saved model per parameter (fine-tuning keeps fp32 weights; save_pretrained)."""


@dataclass
class Job:
    rule: str
    wildcards: str
    model: str | None = None
    group: str = ""
    """What the job is, for the per-rule breakdown (a fine-tune's dataset, a model)."""
    device: str = "cpu"
    gpus: float = 0
    seconds: float = 0.0
    runtime_min: float | None = None
    steps: int = 0
    disk: dict[str, float] = field(default_factory=dict)
    rates: dict[str, str] = field(default_factory=dict)
    """Rate kind -> its provenance."""

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600 * self.gpus


@dataclass
class Plan:
    study: str
    profile: str
    jobs: list[Job]
    notes: list[str] = field(default_factory=list)
    calibrated: dict[str, str] = field(default_factory=dict)
    gpu_cap: float | None = None
    """The profile's cap on GPUs in use at once (``resources: gpu``)."""

    def rules(self) -> list[str]:
        return list(dict.fromkeys(j.rule for j in self.jobs))


# ------------------------------------------------------------------------------ profile

def read_profile(profile: str | Path | None) -> tuple[str, dict]:
    """(where, parsed config.yaml) of a Snakemake profile: a folder, or a bare name under
    ~/.config/snakemake or /etc/xdg/snakemake; ("", {}) for none."""
    import yaml

    if not profile:
        return "", {}
    for folder in (Path(profile), Path.home() / ".config/snakemake" / str(profile),
                   Path("/etc/xdg/snakemake") / str(profile)):
        if (folder / "config.yaml").exists():
            return str(folder), yaml.safe_load((folder / "config.yaml").read_text()) or {}
    raise FileNotFoundError(f"profile {profile!r} not found (no {profile}/config.yaml)")


def resource(prof: Mapping, rule: str, key: str, attempt: int = 1, threads: int = 1):
    """A resource of ``rule`` as the profile gives it (set-resources, else
    default-resources), evaluated as Snakemake does for ``attempt``; None if unset."""
    value = (prof.get("set-resources") or {}).get(rule, {}).get(key)
    if value is None:
        value = (prof.get("default-resources") or {}).get(key)
    if not isinstance(value, str):
        return value
    try:
        return eval(value, {"__builtins__": {}}, {"attempt": attempt, "threads": threads})  # noqa: S307
    except Exception:
        return value


# ------------------------------------------------------------------------------ the plan

def _heavy_gpus(study: Study, prof: Mapping, rule: str, ft: grid.Finetune | None) -> float:
    """GPUs of a job: the profile's ``gpu`` for the rule, else the fine-tune's ``gpus``
    setting; without a Slurm profile the study's ``analysis.gpus_per_job`` (the GPU-hours
    table's convention)."""
    given = resource(prof, rule, "gpu") if "set-resources" in prof else None
    if isinstance(given, (int, float)):
        return float(given)
    if ft is not None and ft.gpus > 1:
        return float(ft.gpus)
    if prof.get("executor") == "slurm":
        return float(ft.gpus) if ft is not None else 0.0
    per_job = study.analysis.gpus_per_job
    return float(per_job.get(rule, per_job.get(LIKE.get(rule, rule), 0)))


def _device(prof: Mapping, rule: str, gpus: float, override: str | None) -> str:
    if override:
        return override
    model = resource(prof, rule, "gpu_model")
    return str(model) if gpus and model else "cpu"


def _estimate(job: Job, work: workload.Work, shape, batch: int) -> None:
    kinds = list(work.flops) or [KIND.get(job.rule, "score")]
    seconds, overhead, load = 0.0, 0.0, 0.0
    for kind in kinds:
        r: Rate | None = rate(shape, job.device, kind, batch) if shape else None
        if r is None:
            job.rates[kind] = "no rate: unknown model shape" if shape is None else "no rate"
            continue
        seconds += r.seconds(work.flops.get(kind, 0.0), max(int(job.gpus), 1))
        overhead, load = max(overhead, r.overhead_s), max(load, r.load_s)
        job.rates[kind] = f"{r.flops_per_s / 1e12:.3g} TFLOP/s per device ({r.source})"
    job.seconds = overhead + load * work.models + seconds
    job.steps = work.steps


def heavy_jobs(study: Study, root: Path, prof: Mapping, device: str | None) -> list[Job]:
    """The pretrain, finetune, evaluate, ablation and attribute jobs, estimated."""
    out = []
    batch = study.evaluation.batch_size
    if not isinstance(batch, int):
        batch = AUTO_DECODE_BATCH

    def add(rule, wildcards, model, work, group="", ft=None):
        gpus = _heavy_gpus(study, prof, rule, ft)
        job = Job(rule, wildcards, model, group or model, _device(prof, rule, gpus, device),
                  gpus)
        runtime = resource(prof, rule, "runtime", threads=study.threads)
        job.runtime_min = float(runtime) if isinstance(runtime, (int, float)) else None
        shape = workload.shape(study, model)
        _estimate(job, work, shape, batch)
        params = shape.params if shape else 0
        if rule == "finetune":
            job.disk = {"models": MODEL_BYTES * params, "state": STATE_BYTES * params}
        elif rule == "pretrain":
            job.disk = {"models": MODEL_BYTES * params}
        elif rule in ("evaluate", "ablation"):
            per = table()["bytes"]
            job.disk = {"predictions": sum(n * per[f"{k}_row"] for k, n in work.rows.items())}
        out.append(job)

    for model, m in study.models.items():
        steps = grid.steps(study, model)
        if m.source == "pretrain":  # one job per step, each from the state below it
            done = 0
            for step in sorted(int(s) for s in steps):
                add("pretrain", f"{model}/{step}", model,
                    workload.pretrain(study, model, done, step))
                done = step
        for ft in grid.finetunes(study, model):
            work = workload.finetune(study, model, ft, root)
            for step in steps:
                add("finetune", f"{model}/{step}/{ft.name}", model, work,
                    f"{model} {ft.dataset}", ft)
        for step in steps:
            add("evaluate", f"{model}/{step}", model, workload.evaluate(study, model, root))
        if model in advisor.proxy_models(study):  # the checkpoint advisor's predictors
            for step in steps:
                add("proxy", f"{model}/{step}", model, workload.proxy(study, model, root))
        if advisor.bpb_sets(study, model):
            for step in steps:
                add("bpb", f"{model}/{step}", model, workload.bpb(study, model, root))
        if grid.ablation(study) is not None and model in grid.analysis_models(study):
            add("ablation", model, model, workload.ablation(study, model, root))
    if study.attribution is not None:
        for model in attribution_models(study):
            for slice_ in study.attribution.slices:
                add("attribute", f"{model}/{slice_}", model,
                    workload.attribute(study, model, slice_))
    return out


def light_jobs(study: Study, device: str) -> list[Job]:
    """The jobs of the light rules, counted from the study, with the table's seconds."""
    used = {ft.dataset for m in study.models for ft in grid.finetunes(study, m)}
    used |= set(grid.eval_sets(study))
    world = [d for d in used if study.datasets[d].source == "world"]
    hub = sorted(d for d in used if study.datasets[d].source == "hub")
    full = int(not advisor.adaptive(study))
    counts = {"world": int(bool(world)), "snapshot_world": int(bool(world)),
              "prefetch": len(hub), "prepare_data": len(used),
              "tokenizer": len({specs.tokenizer_folder(study, m) for m, b in
                                study.models.items() if b.source == "pretrain"}),
              "checkpoints": sum(len(m.steps) for m in study.models.values()),
              "prefetch_model": sum(len(m.steps) for m in study.models.values()
                                    if m.source == "hub"),
              # An adaptive sweep has no full grid's tables; its fine-tunes and
              # evaluations are planned for every checkpoint: the bound, not the pick.
              "aggregate": full, "tables": full, "figures": full,
              "transfer_tables": int(study.transfer is not None),
              "transfer_figures": int(study.transfer is not None),
              "attribution_table": int(study.attribution is not None),
              "proxy_scores": int(bool(advisor.proxy_scores(study))),
              "advise": int(bool(advisor.targets(study))),
              "adaptive_select": int(advisor.adaptive(study)),
              "adaptive_advice": int(advisor.adaptive(study))}
    out = []
    for rule, n in counts.items():
        found = job_seconds(rule, device)
        for i in range(n):
            job = Job(rule, str(i), group=rule)
            job.seconds, job.rates["fixed"] = found if found else (0.0, "not estimated")
            out.append(job)
    return out


def _hub_disk(study: Study, jobs: list[Job]) -> None:
    """Hub weights fetched into HF_HOME, on the prefetch_model jobs."""
    hubs = [m for m, spec in study.models.items() if spec.source == "hub"]
    for job, model in zip([j for j in jobs if j.rule == "prefetch_model"], hubs, strict=False):
        shape = workload.shape(study, model)
        per = table()["shapes"].get(shape.name, {}).get("hub_bytes", 0) if shape else 0
        job.model, job.group = model, model
        job.disk = {"hub cache": per * len(study.models[model].steps)}


def calibrate(plan: Plan, benchmarks: Path) -> None:
    """Rescale each (rule, model) whose jobs have finished by what they measured: the sum
    of their ``benchmarks/`` seconds over the sum of their estimates."""
    import csv

    groups: dict[tuple[str, str | None], list[Job]] = {}
    for j in plan.jobs:
        if j.rule in HEAVY:
            groups.setdefault((j.rule, j.model), []).append(j)
    for (rule, model), jobs in groups.items():
        measured = planned = 0.0
        n = 0
        for j in jobs:
            path = benchmarks / rule / f"{j.wildcards}.tsv"
            if not path.exists() or not j.seconds:
                continue
            with open(path) as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            if rows:
                measured += sum(float(r["s"]) for r in rows) / len(rows)
                planned += j.seconds
                n += 1
        if n and planned:
            k = measured / planned
            for j in jobs:
                j.seconds *= k
                j.rates = {kind: f"benchmarks/: {n} finished {rule} job(s) of {model}, "
                                 f"x{k:.2f} of the table's estimate" for kind in j.rates}
            plan.calibrated[f"{rule} {model}"] = f"{n} jobs, x{k:.2f}"


def default_profile(study: Study) -> str:
    """profiles/slurm for a study of hub models (a cluster's), else profiles/local."""
    hub = any(m.source == "hub" for m in study.models.values())
    return "profiles/slurm" if hub else "profiles/local"


def build(study: Study, root: str | Path = ".", profile: str | Path | None = None,
          device: str | None = None, benchmarks: bool = True) -> Plan:
    """The plan of ``study`` run from ``root`` under ``profile`` (or on ``device``)."""
    root = Path(root)
    where, prof = read_profile(profile)
    jobs = heavy_jobs(study, root, prof, device)
    light_device = "cpu"
    jobs += light_jobs(study, light_device)
    _hub_disk(study, jobs)
    cap = (prof.get("resources") or {}).get("gpu")
    plan = Plan(study.study, where or "(none)", jobs,
                gpu_cap=float(cap) if isinstance(cap, (int, float)) else None)
    if benchmarks and (root / "benchmarks").is_dir():
        calibrate(plan, root / "benchmarks")
    return plan


# ------------------------------------------------------------------------------ summaries

def by_rule(plan: Plan, models=None, per_model_rules=()) -> dict[str, dict]:
    """Per rule: jobs, GPUs per job, hours, GPU-hours, disk (bytes), longest job; with
    ``models`` the per-model rules' jobs of other models are left out and so are the
    transfer rules, as `ckptsweep.analysis.cost.gpu_hours` leaves them out."""
    out: dict[str, dict] = {}
    for j in plan.jobs:
        if models and (j.rule.startswith("transfer_") or
                       (j.rule in per_model_rules and j.model not in models)):
            continue
        r = out.setdefault(j.rule, {"jobs": 0, "hours": 0.0, "gpu_hours": 0.0, "disk": 0.0,
                                    "gpus": set(), "longest_s": 0.0, "runtime_min": None})
        r["jobs"] += 1
        r["hours"] += j.seconds / 3600
        r["gpu_hours"] += j.gpu_hours
        r["disk"] += sum(v for k, v in j.disk.items() if k != "state")
        r["gpus"].add(j.gpus)
        r["longest_s"] = max(r["longest_s"], j.seconds)
        r["runtime_min"] = j.runtime_min if j.runtime_min is not None else r["runtime_min"]
    return out


def over_limit(plan: Plan) -> list[tuple[Job, float]]:
    """Jobs whose estimate exceeds the profile's runtime on attempt 1 (a fine-tune's:
    minus ``stop_margin``, when it saves and stops), with the usable seconds."""
    from ckptsweep.train.config import FinetuneConfig

    out = []
    for j in plan.jobs:
        if j.runtime_min is None:
            continue
        usable = j.runtime_min * 60 - (FinetuneConfig.stop_margin if j.rule == "finetune"
                                       else 0)
        if j.seconds > usable:
            out.append((j, usable))
    return out


def reference(study: Study) -> dict | None:
    """The paper's own cost of this study, if the table knows it (config/config.yaml)."""
    return (table().get("references") or {}).get(study.study)


def fmt_hours(h: float) -> str:
    if h * 3600 < 120:
        return f"{h * 3600:.0f} s"
    if h < 2:
        return f"{h * 60:.1f} min"
    return f"{h:.1f} h" if h < 100 else f"{h:,.0f} h"


def fmt_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} TB"


def ceil_min(seconds: float) -> int:
    return math.ceil(seconds / 60)


# ------------------------------------------------------------------ the GPU-hours table

def run_device(root: str | Path = ".") -> str:
    """The device a finished run fine-tuned on (the first ``throughput.json`` under
    ``results/models``), as the table names it; ``cpu`` when there is none."""
    import json

    from ckptsweep.operate.throughput import device_name

    for path in sorted(Path(root).glob("results/models/*/*/*/throughput.json")):
        try:
            return device_name(json.loads(path.read_text()).get("device"))
        except (OSError, ValueError):
            continue
    return "cpu"


def planned_by_rule(config: Mapping, root: str | Path = ".",
                    device: str | None = None) -> dict[str, dict[str, float]]:
    """rule -> {jobs, hours, gpu_hours} of the plan `ckptsweep plan` makes from the study
    alone (the repository's table, no benchmarks/), on the device the run used, with the
    GPU-hours table's conventions: ``analysis.gpus_per_job`` GPUs per job and only
    ``analysis.models``' per-model jobs (`ckptsweep.analysis.cost.gpu_hours`)."""
    from ckptsweep.analysis.cost import PER_MODEL_RULES

    study = Study.from_config(config, validated=True)
    plan = build(study, root, None, device or run_device(root), benchmarks=False)
    rules = by_rule(plan, study.analysis.models, PER_MODEL_RULES)
    return {rule: {"jobs": r["jobs"], "hours": r["hours"], "gpu_hours": r["gpu_hours"]}
            for rule, r in rules.items()}

"""`ckptsweep plan`'s output: the plan as text for the operator, or as JSON for scripts."""

from __future__ import annotations

from collections import defaultdict

from ckptsweep.operate.plan import (
    Plan,
    by_rule,
    ceil_min,
    fmt_bytes,
    fmt_hours,
    over_limit,
    reference,
)
from ckptsweep.study.config import Study

BAR = "!" * 88


def _gpus(values) -> str:
    vals = sorted(values)
    return "/".join(f"{v:g}" for v in vals) if vals else "0"


def _runtime(minutes) -> str:
    return "-" if minutes is None else f"{minutes:g} min"


def render(plan: Plan, study: Study) -> str:
    rules = by_rule(plan)
    lines = [f"ckptsweep plan: study {plan.study!r}, profile {plan.profile}",
             "Nothing is submitted. Estimates: FLOPs per job (6N training, 2N inference) over "
             "the rates listed below.", ""]
    head = (f"{'rule':<18}{'jobs':>6}{'GPUs/job':>10}{'device':>8}{'wall/job':>12}"
            f"{'longest':>10}{'runtime':>10}{'hours':>10}{'GPU-h':>10}{'disk':>10}")
    lines += [head, "-" * len(head)]
    devices = {}
    for j in plan.jobs:
        devices.setdefault(j.rule, j.device)
    total = defaultdict(float)
    for rule, r in rules.items():
        mean = r["hours"] / r["jobs"] * 3600
        lines.append(f"{rule:<18}{r['jobs']:>6}{_gpus(r['gpus']):>10}{devices[rule]:>8}"
                     f"{fmt_hours(mean / 3600):>12}{fmt_hours(r['longest_s'] / 3600):>10}"
                     f"{_runtime(r['runtime_min']):>10}{fmt_hours(r['hours']):>10}"
                     f"{r['gpu_hours']:>10.2f}{fmt_bytes(r['disk']):>10}")
        for key in ("jobs", "hours", "gpu_hours", "disk"):
            total[key] += r[key]
    lines += ["-" * len(head),
              f"{'total':<18}{int(total['jobs']):>6}{'':>10}{'':>8}{'':>12}{'':>10}{'':>10}"
              f"{fmt_hours(total['hours']):>10}{total['gpu_hours']:>10.2f}"
              f"{fmt_bytes(total['disk']):>10}", ""]
    lines += _breakdown(plan)
    lines += _warnings(plan, study)
    lines += _disk(plan)
    lines += _rates(plan)
    ref = reference(study)
    if ref:
        ratio = total["gpu_hours"] / ref["gpu_hours"]
        lines += ["", f"The paper: {ref['gpu_hours']:,} {ref['device']}-hours ({ref['source']}). "
                      f"This plan: {total['gpu_hours']:,.1f} GPU-hours, {ratio:.1%} of it.",
                  f"  {ref.get('note', '')}".rstrip()]
    return "\n".join(lines).rstrip() + "\n"


def _breakdown(plan: Plan) -> list[str]:
    """Per rule, its jobs grouped (a fine-tune's model and dataset, a model): the spread."""
    groups: dict[tuple[str, str], list] = {}
    for j in plan.jobs:
        if j.rule in ("finetune", "evaluate", "ablation", "pretrain", "attribute"):
            groups.setdefault((j.rule, j.group), []).append(j)
    if not groups:
        return []
    out = ["Per job group:", f"  {'rule':<10}{'group':<28}{'jobs':>5}{'GPUs':>6}{'wall/job':>11}"
                             f"{'steps':>8}{'GPU-h':>10}"]
    for (rule, group), jobs in groups.items():
        j = jobs[0]
        gh = sum(x.gpu_hours for x in jobs)
        steps = f"{j.steps:,}" if rule == "finetune" else ""
        out.append(f"  {rule:<10}{group:<28}{len(jobs):>5}{j.gpus:>6g}"
                   f"{fmt_hours(j.seconds / 3600):>11}{steps:>8}{gh:>10.2f}")
    return [*out, ""]


def _warnings(plan: Plan, study: Study) -> list[str]:
    unknown = sorted({f"{j.rule} {j.group}" for j in plan.jobs
                      if any(t.startswith("no rate") for t in j.rates.values())})
    if unknown:
        return [BAR, f"!! WARNING: no estimate for {', '.join(unknown)}: the model's shape or "
                     "a rate is missing from src/ckptsweep/operate/throughput.yaml (shapes: "
                     "add the hub repo's architecture; rates: a measured entry).", BAR, "",
                *_warnings_limits(plan, study)]
    return _warnings_limits(plan, study)


def _warnings_limits(plan: Plan, study: Study) -> list[str]:
    over = over_limit(plan)
    if not over:
        limits = [j for j in plan.jobs if j.runtime_min is not None]
        return (["Every job's estimate fits its Slurm runtime on attempt 1.", ""] if limits
                else ["No Slurm runtime in this profile: no time limits to check.", ""])
    groups: dict[tuple[str, str], list] = {}
    for j, usable in over:
        groups.setdefault((j.rule, j.group), []).append((j, usable))
    out = [BAR]
    for (rule, group), jobs in groups.items():
        j, usable = max(jobs, key=lambda x: x[0].seconds)
        then = {"finetune": " The fine-tune saves and stops stop_margin before the limit; "
                            "Snakemake's retry (twice the time) resumes it.",
                "evaluate": " It is killed (TIMEOUT); the retry gets twice the time and "
                            + ("keeps the blocks the prediction cache holds."
                               if study.evaluation.cache_dir else "starts over.")
                }.get(rule, " It is killed (TIMEOUT); the retry gets twice the time and "
                            "starts over.")
        out.append(f"!! WARNING: {len(jobs)} {rule} job(s) of {group} are estimated at "
                   f"{fmt_hours(j.seconds / 3600)}, over the {j.runtime_min:g} min Slurm "
                   f"runtime of attempt 1 (usable {ceil_min(usable)} min).{then} Raise "
                   f"`runtime` for {rule} in the profile's set-resources to at least "
                   f"{ceil_min(j.seconds * 1.25)} min.")
    return [*out, BAR, ""]


def _disk(plan: Plan) -> list[str]:
    sums: dict[str, float] = defaultdict(float)
    state = [j.disk.get("state", 0) for j in plan.jobs if j.rule == "finetune"]
    for j in plan.jobs:
        for key, b in j.disk.items():
            if key != "state":
                sums[f"{key} ({j.rule})"] += b
    out = ["Disk:"]
    out += [f"  {k:<32}{fmt_bytes(v):>10}" for k, v in sums.items()]
    if state:
        cap = plan.gpu_cap
        fts = sorted(((j.disk.get("state", 0), max(j.gpus, 1)) for j in plan.jobs
                      if j.rule == "finetune"), reverse=True)
        at_once, used = 0.0, 0.0
        for b, g in fts:
            if cap is not None and used + g > cap:
                break
            at_once, used = at_once + b, used + g
        limit = f"at most {fmt_bytes(at_once)} with {cap:g} GPUs at once (the profile's " \
                "`resources: gpu`)" if cap is not None else f"{fmt_bytes(at_once)} if all at once"
        out.append(f"  {'resumable state (finetune)':<32}{fmt_bytes(max(state)):>10} per running "
                   f"or failed fine-tune (resources/resume/, removed when it finishes); {limit}")
    return [*out, ""]


def _rates(plan: Plan) -> list[str]:
    """Each distinct rate once, with the job groups that use it."""
    used: dict[tuple[str, str], list[str]] = {}
    for j in plan.jobs:
        for kind, text in j.rates.items():
            who = f"{j.rule} {j.group}" if j.group != j.rule else j.rule
            names = used.setdefault((kind, text), [])
            if who not in names:
                names.append(who)
    out = ["Rates (model FLOP/s per device, and where each comes from):"]
    for (kind, text), who in used.items():
        if kind != "fixed":
            out.append(f"  [{kind}] {text}\n      used by: {', '.join(who)}")
    fixed = [w for (k, _), ws in used.items() if k == "fixed" for w in ws]
    if fixed:
        out.append(f"  light jobs ({', '.join(dict.fromkeys(fixed))}): the table's seconds per "
                   "job; downloads (prefetch, prefetch_model) are not estimated")
    return out


def to_json(plan: Plan, study: Study) -> dict:
    rules = by_rule(plan)
    return {"study": plan.study, "profile": plan.profile,
            "rules": {r: {**v, "gpus": sorted(v["gpus"])} for r, v in rules.items()},
            "total": {k: sum(v[k] for v in rules.values())
                      for k in ("jobs", "hours", "gpu_hours", "disk")},
            "over_limit": [{"rule": j.rule, "job": j.wildcards, "seconds": j.seconds,
                            "runtime_min": j.runtime_min} for j, _ in over_limit(plan)],
            "calibrated": plan.calibrated, "reference": reference(study),
            "jobs": [{"rule": j.rule, "job": j.wildcards, "model": j.model, "device": j.device,
                      "gpus": j.gpus, "seconds": round(j.seconds, 1), "steps": j.steps,
                      "runtime_min": j.runtime_min, "disk": j.disk, "rates": j.rates}
                     for j in plan.jobs]}

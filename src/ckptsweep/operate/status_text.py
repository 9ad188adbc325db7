"""`ckptsweep status`'s output: a summary that fits a screen, one line per job, the
details of what needs attention, and the command that re-runs it."""

from __future__ import annotations

from ckptsweep.operate.status import STATES, Status, as_dict, rerun_command, summary

ORDER = {state: i for i, state in enumerate(STATES)}


def _resume(s: Status) -> str:
    if s.resume_step is None:
        return "no resumable state" if s.state in ("failed", "incomplete") else ""
    if s.resume_step < 0:
        return "resumable state (step unreadable)"
    of = f" of {s.steps:,}" if s.steps else ""
    return f"resumable at step {s.resume_step:,}{of}"


def line(s: Status, width: int) -> str:
    bits = []
    if s.state in ("failed", "incomplete", "running") and s.cause:
        bits.append(s.cause)
    if s.attempts > 1 or s.state == "failed":
        bits.append(f"{s.attempts} attempt{'s' if s.attempts != 1 else ''}")
    if s.rule == "finetune" and _resume(s):
        bits.append(_resume(s))
    if s.state == "pending" and s.reason:
        bits.append(s.reason)
    return f"{s.rule:<16} {s.job:<{width}} {s.state:<11}{', '.join(bits)}".rstrip()


def render(statuses: list[Status], header: str, configfile: str | None,
           profile: str | None, notes: list[str], shown: list[Status] | None = None) -> str:
    """The board; ``shown``: the jobs listed line by line (default all)."""
    counts = summary(statuses)
    out = [header, ""]
    head = f"{'rule':<18}" + "".join(f"{s:>11}" for s in STATES) + f"{'total':>8}"
    out += [head, "-" * len(head)]
    totals = dict.fromkeys(STATES, 0)
    for rule, c in counts.items():
        out.append(f"{rule:<18}" + "".join(f"{c[s] or '.':>11}" for s in STATES)
                   + f"{sum(c.values()):>8}")
        for s in STATES:
            totals[s] += c[s]
    out += ["-" * len(head), f"{'total':<18}" + "".join(f"{totals[s]:>11}" for s in STATES)
            + f"{sum(totals.values()):>8}", ""]
    width = max((len(s.job) for s in statuses), default=10)
    ordered = sorted(statuses, key=lambda s: ORDER[s.state])
    listed = sorted(shown if shown is not None else statuses, key=lambda s: ORDER[s.state])
    out += [line(s, width) for s in listed] or ["(no job in the states asked for)"]
    attention = [s for s in ordered if s.state in ("failed", "incomplete")]
    if attention:
        out += ["", "Needs attention:"]
        for s in attention:
            out.append(f"  {s.rule} {s.job}: {s.state}"
                       + (f", {s.cause}" if s.cause else "")
                       + (f", {s.attempts} attempt(s)" if s.attempts else ""))
            if s.slurm_jobid:
                out.append(f"    last Slurm job {s.slurm_jobid}"
                           + (f", Slurm log {s.slurm_log}" if s.slurm_log else ""))
            if s.log:
                out.append(f"    log {s.log}")
            if s.error:
                out.append(f"    last error: {s.error}")
            if s.rule == "finetune":
                out.append(f"    {_resume(s) or 'no resumable state'}")
    out += ["", *notes] if notes else []
    cmd = rerun_command(statuses, configfile, profile)
    out += ["", "Re-run exactly the failed and incomplete jobs:" if cmd else
            "Nothing failed or incomplete.", *([f"  {cmd}"] if cmd else [])]
    return "\n".join(out) + "\n"


def to_json(statuses: list[Status], configfile: str | None, profile: str | None,
            notes: list[str], slurm_source: str) -> dict:
    return {"summary": summary(statuses), "slurm": slurm_source, "notes": notes,
            "jobs": [as_dict(s) for s in statuses],
            "command": rerun_command(statuses, configfile, profile)}

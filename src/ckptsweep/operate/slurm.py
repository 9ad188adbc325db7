"""What Slurm and the Slurm executor recorded about a workflow's jobs, read back.

The executor (snakemake-executor-plugin-slurm) names every job of one snakemake run
after the run's id (``SLURM run ID: <id>`` in the run's log, ``sacct --name <id>``),
comments it ``rule_{rule}_wildcards_{values joined by _}``, and writes its Slurm log to
``.snakemake/slurm_logs/rule_{rule}/{values}/{jobid}.log`` (kept for failed jobs). From
these, `attempts` gives every Slurm attempt of every job: its state (an allocation
``FAILED`` whose step was killed by the cgroup reads ``OUT_OF_MEMORY``), exit code and
log. Without ``sacct`` (accounting off) the states come from ``squeue`` (queued and
running jobs) and from the Slurm logs' own messages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING"}
FIELDS = "JobIDRaw,JobName,State,ExitCode,Comment,WorkDir,Start,End,Elapsed"
LOG_CAUSES = (("oom-kill event", "OUT_OF_MEMORY"), ("oom_kill event", "OUT_OF_MEMORY"),
              ("Out Of Memory", "OUT_OF_MEMORY"),
              ("DUE TO TIME LIMIT", "TIMEOUT"), ("DUE TO PREEMPTION", "PREEMPTED"),
              ("DUE TO NODE FAILURE", "NODE_FAIL"), ("CANCELLED AT", "CANCELLED"))
"""Messages slurmstepd writes into a job's log, and the state they mean."""


@dataclass
class Attempt:
    jobid: str
    state: str
    exit_code: str = ""
    rule: str = ""
    key: str = ""
    """The job's wildcards as the executor joins them (`dag.DagJob.slurm_key`)."""
    log: str | None = None
    elapsed: str = ""
    source: str = "sacct"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def cause(self) -> str:
        """The state as an operator reads it: ``FAILED (exit 1)``, ``OUT_OF_MEMORY``..."""
        if self.state == "FAILED" and self.exit_code:
            return f"FAILED (exit {self.exit_code.split(':')[0]})"
        return self.state


def run_ids(workdir: Path) -> list[str]:
    """The Slurm run ids of every snakemake run logged in ``.snakemake/log``."""
    ids = []
    for path in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        ids += re.findall(r"SLURM run ID: (\S+)", path.read_text(errors="replace"))
    return list(dict.fromkeys(ids))


def submitted(workdir: Path) -> dict[str, tuple[str, str]]:
    """Slurm job id -> (rule, key), from the runs' logs (``has been submitted with SLURM
    jobid N (log: .../rule_R/KEY/N.log)``) and the Slurm log folder."""
    out = {}
    for path in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        for jobid, log in re.findall(r"SLURM jobid (\d+) \(log: (\S+?)\)",
                                     path.read_text(errors="replace")):
            out[jobid] = _rule_key(Path(log))
    for log in (workdir / ".snakemake" / "slurm_logs").glob("rule_*/**/*.log"):
        out.setdefault(log.stem, _rule_key(log))
    return out


def _rule_key(log: Path) -> tuple[str, str]:
    parts = log.parts
    i = max(i for i, p in enumerate(parts) if p.startswith("rule_"))
    return parts[i][len("rule_"):], "/".join(parts[i + 1:-1])


def _since(workdir: Path) -> str:
    """sacct's -S: a day before the oldest run log (sacct starts at midnight otherwise)."""
    logs = list((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    oldest = min((p.stat().st_mtime for p in logs), default=time.time()) - 86400
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(oldest))


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def sacct(workdir: Path, names: list[str]) -> list[Attempt] | None:
    """Every Slurm job of the runs ``names`` started from ``workdir`` (None: no sacct)."""
    if not names:
        return []
    out = _run(["sacct", "-n", "-P", "-X", "-S", _since(workdir), "--name", ",".join(names),
                "-o", FIELDS])
    if out is None:
        return None
    jobs = []
    for line in out.splitlines():
        f = line.split("|")
        if len(f) < 9 or (f[5] and Path(f[5]).resolve() != workdir.resolve()):
            continue
        rule, _, key = f[4].removeprefix("rule_").partition("_wildcards_")
        jobs.append(Attempt(f[0], f[2].split()[0], f[3], rule if f[4] else "", key,
                            elapsed=f[8]))
    steps = _run(["sacct", "-n", "-P", "-j", ",".join(j.jobid for j in jobs) or "0",
                  "-o", "JobIDRaw,State"]) if jobs else ""
    oom = {line.split(".")[0] for line in (steps or "").splitlines()
           if "|OUT_OF_MEMORY" in line}
    for j in jobs:
        if j.jobid in oom:
            j.state = "OUT_OF_MEMORY"
    return jobs


def squeue(names: list[str]) -> list[Attempt] | None:
    """Queued and running jobs of the runs ``names`` (None: no squeue)."""
    if not names:
        return []
    out = _run(["squeue", "-h", "--name", ",".join(names), "-o", "%i|%T|%k"])
    if out is None:
        return None
    jobs = []
    for line in out.splitlines():
        jobid, state, comment = (line.split("|") + ["", ""])[:3]
        rule, _, key = comment.removeprefix("rule_").partition("_wildcards_")
        jobs.append(Attempt(jobid, state, rule=rule, key=key, source="squeue"))
    return jobs


def log_cause(path: Path) -> tuple[str | None, str]:
    """(state, line) that slurmstepd wrote into a Slurm log, if any."""
    text = tail(path)
    for line in reversed(text.splitlines()):
        for needle, state in LOG_CAUSES:
            if needle in line:
                return state, line.strip()
    return None, ""


def tail(path: Path, size: int = 65536) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def attempts(workdir: Path) -> tuple[dict[tuple[str, str], list[Attempt]], str]:
    """(rule, key) -> its Slurm attempts, oldest first, and where they were read from."""
    workdir = workdir.resolve()
    names = run_ids(workdir)
    ids = submitted(workdir)
    found = sacct(workdir, names)
    how = f"sacct --name (runs {', '.join(names)})" if found is not None else ""
    queued = squeue(names) or []
    if found is None:
        found = [Attempt(jobid, "SUBMITTED", rule=r, key=k, source="log")
                 for jobid, (r, k) in ids.items()]
        how = "squeue and the Slurm logs (no sacct)"
    by_id = {a.jobid: a for a in found}
    for q in queued:  # squeue is fresher than slurmdbd
        by_id[q.jobid] = q
    out: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for a in by_id.values():
        if not a.rule and a.jobid in ids:
            a.rule, a.key = ids[a.jobid]
        if a.jobid in ids:
            log = workdir / ".snakemake" / "slurm_logs" / f"rule_{ids[a.jobid][0]}"
            log = log / ids[a.jobid][1] / f"{a.jobid}.log"
            a.log = str(log.relative_to(workdir)) if log.exists() else None
        if a.state == "SUBMITTED" or (a.state == "FAILED" and a.log):
            state, _ = log_cause(workdir / a.log) if a.log else (None, "")
            a.state = state or a.state
        out[(a.rule, a.key)].append(a)
    for v in out.values():
        v.sort(key=lambda a: int(re.sub(r"\D", "", a.jobid) or 0))
    return dict(out), how if names else ""

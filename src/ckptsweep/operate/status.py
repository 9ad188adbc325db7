"""Where a study stands, job by job, from what Snakemake and Slurm already recorded.

No database of its own: the workflow's DAG and Snakemake's metadata and incomplete
markers (`dag`), the runs' logs in ``.snakemake/log`` (local failures), Slurm's
accounting, queue and the executor's logs (`slurm`), the jobs' own logs (the last error
line) and the fine-tunes' resumable state in ``resources/resume/``. Readable while
snakemake runs and after it is gone, with or without Slurm.

States: ``done`` (outputs there and up to date), ``running`` (in Slurm's queue, or a
live local snakemake has it started), ``pending`` (not run yet, or out of date),
``incomplete`` (started and never finished: snakemake or its job was killed) and
``failed`` (the last attempt failed; its Slurm state, attempts, log and error line say
how). `rerun_command` re-runs exactly the failed and incomplete jobs.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shlex
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckptsweep.operate import slurm
from ckptsweep.operate.dag import DagJob

STATES = ("done", "pending", "running", "incomplete", "failed")
ERROR = re.compile(r"(?i)(error|exception|traceback|\bkilled\b|out of memory|\boom\b|"
                   r"cancelled|denied|not found|no such file|segmentation fault|"
                   r"exit(ed)? (code|status))")


@dataclass
class Status:
    rule: str
    job: str
    state: str
    cause: str = ""
    attempts: int = 0
    log: str | None = None
    slurm_log: str | None = None
    error: str = ""
    resume_step: int | None = None
    steps: int | None = None
    outputs: list[str] = field(default_factory=list)
    slurm_jobid: str | None = None
    reason: str = ""


# ------------------------------------------------------------------------ evidence

def local_errors(workdir: Path) -> dict[str, list[str]]:
    """Output path -> the causes of its failed local attempts, oldest first, from the
    runs' logs (Snakemake's ``Error in rule`` blocks)."""
    out: dict[str, list[str]] = {}
    for path in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        text = path.read_text(errors="replace")
        for m in re.finditer(r"Error in rule (\S+?):\n((?:    .*\n?)+)", text):
            block = m.group(2)
            before = text[max(0, m.start() - 3000):m.start()]
            code = re.findall(r"non-zero exit status (-?\d+)", before)
            cause = f"FAILED (exit {code[-1]})" if code else "FAILED"
            if code and code[-1] in ("-9", "137"):
                cause = "KILLED (signal 9: out of memory?)"
            if "SLURM sbatch failed" in before[-1500:]:
                cause = "SUBMIT_FAILED (sbatch refused it)"
            for line in block.splitlines():
                if line.startswith("    output: "):
                    for f in line[len("    output: "):].split(", "):
                        out.setdefault(f.strip(), []).append(cause)
    return out


def last_error(path: Path, strict: bool = False) -> str:
    """The last line of a log that looks like an error (else, unless ``strict``, its last
    line)."""
    lines = [x.strip() for x in slurm.tail(path).splitlines() if x.strip()]
    for line in reversed(lines):
        if ERROR.search(line):
            return line[:300]
    return lines[-1][:300] if lines and not strict else ""


class _Inert:
    """Whatever a pickle names (a tensor rebuilder, a class): built from nothing, keeps
    nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _Dict(dict):
    """An OrderedDict read back: a dict that may carry attributes (torch's _metadata)."""


class _DataOnly(pickle.Unpickler):
    """Reads a torch checkpoint's pickle as plain data: no class is looked up and no code
    runs (every reference becomes `_Inert`), tensors are not read."""

    def find_class(self, module, name):
        return _Dict if (module, name) == ("collections", "OrderedDict") else _Inert

    def persistent_load(self, pid):
        return None


def resume_step(folder: Path) -> int | None:
    """The optimizer step a fine-tune's resumable state was saved at (``state.pt``'s
    ``train.step``), read without torch and without loading its tensors."""
    file = folder / "state.pt"
    if not file.exists():
        return None
    try:
        with zipfile.ZipFile(file) as z:
            name = next(n for n in z.namelist() if n.endswith("data.pkl"))
            blob = _DataOnly(io.BytesIO(z.read(name))).load()
        return int(blob["train"]["step"])
    except Exception:
        return -1  # a state is there, but unreadable (being written, another layout)


def snakemake_alive(workdir: Path) -> bool:
    """A snakemake process (not a job step) runs in ``workdir`` on this host."""
    me, target = os.getpid(), str(workdir.resolve())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        text = b" ".join(cmd).decode(errors="replace")
        if (int(pid) != me and cwd == target and re.search(r"\bsnakemake\b", text)
                and "slurm-jobstep" not in text and "--mode" not in text):
            return True
    return False


# ------------------------------------------------------------------------ states

def job_states(dag_jobs: list[DagJob], workdir: Path, study=None) -> tuple[list[Status], str]:
    """The status of every job, and where the Slurm states came from."""
    workdir = workdir.resolve()
    tries, how = slurm.attempts(workdir)
    errors = local_errors(workdir)
    alive = snakemake_alive(workdir)
    out = []
    for j in dag_jobs:
        if j.rule == "all" and not j.outputs:
            continue
        mine = tries.get((j.rule, j.slurm_key), [])
        since = _since_success(mine)
        s = Status(j.rule, j.name, "pending", outputs=j.outputs,
                   log=j.log[0] if j.log else None, reason=_short(j.reason))
        last = since[-1] if since else None
        local = [c for o in j.outputs for c in errors.get(o, [])]
        if last is not None and last.active:
            s.state, s.cause = "running", last.state
        elif not j.needrun and j.exists:
            s.state, s.reason = "done", ""
        elif j.incomplete:
            s.state = "running" if alive and not mine else "incomplete"
            s.cause = (last.cause if last else "") or "started, never finished"
        elif last is not None and last.state not in ("COMPLETED", "SUBMITTED"):
            s.state, s.cause = "failed", last.cause
        elif local and not j.exists and not mine:
            s.state, s.cause, s.attempts = "failed", local[-1], len(local)
        elif j.exists:
            s.reason = f"out of date: {s.reason}"
        if since:
            s.attempts = len(since)
            s.slurm_jobid, s.slurm_log = last.jobid, last.log
        if s.state in ("failed", "incomplete"):
            s.error = _error(workdir, s)
        if j.rule == "finetune" and study is not None:
            _resume(s, j, study, workdir)
        out.append(s)
    _blocked(out, dag_jobs)
    return out, how


def _blocked(statuses: list[Status], dag_jobs: list[DagJob]) -> None:
    """A pending job behind a failed or incomplete one says so (first such, and how
    many), through every level of the DAG."""
    state = {(s.rule, s.job): s for s in statuses}
    ups = {(j.rule, j.name): j.upstream for j in dag_jobs}

    def stuck(key, seen) -> list[tuple[str, str]]:
        found = []
        for up in ups.get(key, []):
            if up in seen:
                continue
            seen.add(up)
            if up in state and state[up].state in ("failed", "incomplete"):
                found.append(up)
            elif up in state and state[up].state == "pending":
                found += stuck(up, seen)
        return found

    for key, s in state.items():
        if s.state == "pending":
            behind = stuck(key, set())
            if behind:
                rule, job = behind[0]
                more = f" (+{len(behind) - 1} more)" if len(behind) > 1 else ""
                s.reason = f"behind {state[behind[0]].state} {rule} {job}{more}"


def _since_success(attempts: list[slurm.Attempt]) -> list[slurm.Attempt]:
    """The attempts after the last completed one (or all): the current series."""
    done = [i for i, a in enumerate(attempts) if a.state == "COMPLETED"]
    if done and done[-1] == len(attempts) - 1:
        return attempts[-1:]
    return attempts[done[-1] + 1:] if done else attempts


def _short(reason: str) -> str:
    """Snakemake's first reason, in a few words."""
    first = reason.split(";")[0].split(":")[0].strip()
    return "not run yet" if first == "Missing output files" else first


def _error(workdir: Path, s: Status) -> str:
    """Slurm's own message for a job it ended (memory, time, cancel, node); else the last
    error line of the job's log, then of its Slurm log; else the job log's last line."""
    logs = [workdir / p for p in (s.log, s.slurm_log) if p and (workdir / p).exists()]
    if s.slurm_log and (workdir / s.slurm_log).exists():
        state, line = slurm.log_cause(workdir / s.slurm_log)
        if state and state == s.cause:
            return line
    for log in logs:
        line = last_error(log, strict=True)
        if line:
            return line
    return last_error(logs[0]) if logs else ""


def _resume(s: Status, j: DagJob, study, workdir: Path) -> None:
    from ckptsweep.study.specs import resume_dir

    w = j.wildcards
    if not {"model", "step", "ft"} <= set(w):
        return
    s.resume_step = resume_step(workdir / resume_dir(w["model"], w["step"], w["ft"]))
    try:
        from ckptsweep.operate.workload import finetune
        from ckptsweep.study.grid import finetune as find

        ft = find(study, w["ft"], w["model"])
        s.steps = finetune(study, w["model"], ft, workdir).steps
    except Exception:
        s.steps = None


# ------------------------------------------------------------------------ summaries

def summary(statuses: list[Status]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for s in statuses:
        counts = out.setdefault(s.rule, dict.fromkeys(STATES, 0))
        counts[s.state] += 1
    return out


def rerun_command(statuses: list[Status], configfile: str | None,
                  profile: str | None) -> str | None:
    """The snakemake command that re-runs exactly the failed and incomplete jobs (their
    outputs as targets; nothing downstream): None when there are none."""
    targets = [s.outputs[0] for s in statuses
               if s.state in ("failed", "incomplete") and s.outputs]
    if not targets:
        return None
    args = ["snakemake"]
    args += ["--profile", profile] if profile else ["--cores", "all"]
    args += ["--configfile", configfile] if configfile else []
    args += ["--rerun-incomplete", *targets]
    return shlex.join(args)


def as_dict(s: Status) -> dict:
    return {k: v for k, v in asdict(s).items() if v not in (None, "", [])}

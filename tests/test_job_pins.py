"""Every job's command and inputs, pinned: a code change must not make a finished study
re-run a pre-training, fine-tune or evaluation whose result would not change.

Snakemake re-runs a job when its params (the ``--spec`` JSON, inside the shell command),
its shell code or its input files change. This test takes the dry run of the whole grid
(``--forceall -p``) of the demo and of the paper's config and compares, job by job, a hash
of the shell command and the input list with ``tests/data/jobs/*.tsv``. When a change is
meant to re-run jobs, rewrite the pins and say why in the commit:

    PATH=.venv/bin:$PATH python tests/test_job_pins.py --write
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "tests/data/jobs"
CONFIGS = {"demo": "config/demo.yaml", "paper": "config/config.yaml"}
pytestmark = pytest.mark.workflow


def dry_run_jobs(configfile: str) -> dict[str, dict]:
    """{rule outputs: {rule, input, shell}} of every job of the whole grid."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(Path.home()),
           "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "-p",
                           "--forceall", "--cores", "4", "--configfile", configfile],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"dry run of {configfile} failed:\n{proc.stdout}\n{proc.stderr}")
    jobs, job = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            job = {"rule": line.split()[1].rstrip(":"), "input": "", "output": "", "shell": ""}
        elif job is not None and line.startswith("    input: "):
            job["input"] = ", ".join(sorted(line[len("    input: "):].split(", ")))
        elif job is not None and line.startswith("    output: "):
            job["output"] = line[len("    output: "):]
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line[len("Shell command: "):]
        elif job is not None and not line.strip():
            if job["rule"] != "all":
                jobs[f"{job['rule']} {job['output']}"] = job
            job = None
    if job is not None and job["rule"] != "all":
        jobs[f"{job['rule']} {job['output']}"] = job
    return jobs


def digest(job: dict) -> str:
    # The batch policy reaches the command as a resource (`--batch-size`) and the torch
    # threads as the rule's `threads` (`--threads`): Snakemake compares a rule's shell code
    # before formatting, never a resource's or the threads' value (a finished demo with
    # the tiny model's pre-training on 2 threads dry-runs none on 1), so neither does this
    # pin. Neither changes a result (pre-training is bit-identical on 1 and 2 threads).
    shell = re.sub(r" --(batch-size|threads) \S+", "", job["shell"])
    return hashlib.sha256(f"{shell}\n{job['input']}".encode()).hexdigest()[:16]


def read_pins(name: str) -> dict[str, str]:
    lines = (PINS / f"{name}.tsv").read_text().splitlines()
    return dict(line.rsplit("\t", 1) for line in lines if line and not line.startswith("#"))


def write_pins(name: str) -> None:
    jobs = dry_run_jobs(CONFIGS[name])
    header = (f"# {CONFIGS[name]}: job (rule and outputs) -> sha256 of its shell command "
              "and sorted inputs (tests/test_job_pins.py)\n")
    (PINS / f"{name}.tsv").write_text(header + "".join(
        f"{key}\t{digest(job)}\n" for key, job in sorted(jobs.items())))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_job_keeps_its_command_and_inputs(name):
    pins, jobs = read_pins(name), dry_run_jobs(CONFIGS[name])
    assert len(jobs) > 20, "the dry run listed almost no jobs: the parser is broken"
    changed = [f"{key}\n    now: {job['shell'] or '(script rule)'}\n    inputs: {job['input']}"
               for key, job in sorted(jobs.items()) if pins.get(key) != digest(job)]
    gone = sorted(set(pins) - set(jobs))
    assert not changed and not gone, (
        f"{len(changed)} jobs of {CONFIGS[name]} changed their command or inputs (a finished "
        "study would re-run them) and " + f"{len(gone)} disappeared:\n"
        + "\n".join(changed[:10] + gone[:10]))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    for name in CONFIGS:
        write_pins(name)
        print(f"{PINS / name}.tsv: {len(read_pins(name))} jobs")

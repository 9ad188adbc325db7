"""`ckptsweep status`: the board read back from what Snakemake and Slurm recorded.

- Locally (no Slurm), on a four-rule workflow: a job that succeeds, one that fails with
  an exit code, one left pending behind it, and one left incomplete by a killed
  snakemake; the board names each, the failure's last error line, and its command
  re-runs exactly the failed and incomplete jobs (a dry run of it shows those two).
- Against the real local Slurm (tools/slurm-local.sh, as tests/test_slurm.py), on
  tests/config/slurm/tiny.yaml plus a base-only model: an evaluation killed for memory
  (cgroup OUT_OF_MEMORY on both attempts), a fine-tune cancelled mid-run on both attempts
  (its resumable state stays), a fine-tune that fails (``device: cuda`` on a machine
  without one: exit 1), the rest done or pending behind them. The board gives each
  failure's Slurm state, attempts, log and error line and the cancelled fine-tune's
  resume step, and its command re-runs exactly those three jobs (a dry run of it).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from ckptsweep.operate import dag, status
from tests import test_slurm
from tests.test_slurm import (
    BIN,
    ROOT,
    TINY,
    Run,
    cancel,
    env,
    squeue,
    wait_for,
    workcopy,
    write_profile,
)
from tests.test_workflow import job_counts

cluster, home = test_slurm.cluster, test_slurm.home  # fixtures: the real Slurm, runs' HOME

SNAKEFILE = """
rule all:
    input: "a.txt", "c.txt", "d.txt"

rule a:
    output: "a.txt"
    log: "logs/a.log"
    shell: "echo fine > {output}; echo done > {log}"

rule b:
    output: "b.txt"
    log: "logs/b.log"
    shell: "(echo loading; echo 'ValueError: the disk is on fire'; echo done) > {log}; exit 3"

rule c:
    input: "b.txt"
    output: "c.txt"
    log: "logs/c.log"
    shell: "cp {input} {output} 2> {log}"

rule d:
    output: "d.txt"
    log: "logs/d.log"
    shell: "echo started > {log}; sleep 600; touch {output}"
"""


def snakemake(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
                          **kw)


def test_resume_step_is_read_without_torch(tmp_path):
    """state.pt is torch's zip of a pickle; the step comes out without running its code."""
    torch = pytest.importorskip("torch")
    blob = {"format": 2, "train": {"step": 250, "epoch": 1}, "model": torch.zeros(3, 2),
            "python_rng": (3, tuple(range(5)), None)}
    torch.save(blob, tmp_path / "state.pt")
    assert status.resume_step(tmp_path) == 250
    assert status.resume_step(tmp_path / "missing") is None
    evil = tmp_path / "evil"
    evil.mkdir()
    with zipfile.ZipFile(evil / "state.pt", "w") as z:  # a pickle that would run code
        z.writestr("archive/data.pkl", pickle.dumps({"train": {"step": os.system}}))
    assert status.resume_step(evil) == -1  # refused, not run


@pytest.mark.workflow
def test_local_board_names_each_state_and_reruns_exactly_the_failures(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "3", "--keep-going"],
                            cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    logs = tmp_path / ".snakemake" / "log"
    t0 = time.monotonic()
    try:
        while not ((tmp_path / "logs/d.log").exists() and any(
                "Error in rule b" in p.read_text() for p in logs.glob("*.log"))):
            assert proc.poll() is None, "snakemake ended early"
            assert time.monotonic() - t0 < 120, "the failure and the long job never came"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job: d stays incomplete
        proc.wait()
    board = {s.job: s for s in status.job_states(dag.jobs(None, tmp_path), tmp_path)[0]}
    assert {k: s.state for k, s in board.items()} == {
        "a": "done", "b": "failed", "c": "pending", "d": "incomplete"}
    assert board["b"].cause == "FAILED (exit 3)" and board["b"].attempts == 1
    assert board["b"].error == "ValueError: the disk is on fire"
    assert board["b"].log == "logs/b.log"
    cmd = status.rerun_command(list(board.values()), None, None)
    assert cmd == "snakemake --cores all --rerun-incomplete b.txt d.txt"
    dry = snakemake(tmp_path, "-n", *cmd.split()[1:])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert job_counts(dry.stdout + dry.stderr) == {"b": 1, "d": 1, "total": 2}


# ------------------------------------------------------------------------ real Slurm
NLI = "tiny/30/nli-lr1e-3-s0"
SUMM = "tiny/30/summ-lr1e-3-s0"
OOM = "tiny2/30"
NLI_STATE = f"resources/resume/{NLI}/state.pt"
NLI_COMMENT = f"rule_finetune_wildcards_{NLI.replace('/', '_')}"


def status_config() -> dict:
    cfg = yaml.safe_load((ROOT / TINY).read_text())
    cfg["models"]["tiny2"] = {**cfg["models"]["tiny"], "finetune": []}  # base only
    cfg["models"]["tiny2"]["pretrain"] = {**cfg["models"]["tiny"]["pretrain"], "seed": 1}
    cfg["finetune"]["tasks"]["summ"] = {"device": "cuda"}  # no GPU here: fails at once
    return cfg


def running(work: Path, comment: str, not_id: str) -> str | None:
    found = [j for j, c, state in squeue(work) if c == comment and j != not_id
             and state == "RUNNING"]
    return found[0] if found else None


@pytest.fixture(scope="module")
def failed_run(cluster, home, tmp_path_factory):
    """The study run through Slurm with its three failures (retries: 1, so each has two
    attempts); both attempts of the nli fine-tune are cancelled mid-run."""
    work = workcopy(tmp_path_factory.mktemp("status"))
    (work / "status.yaml").write_text(yaml.safe_dump(status_config(), sort_keys=False))
    write_profile(work, "slurm-status", {
        "retries": 1, "set-resources": {"evaluate": {"mem_mb": "200 * 2 ** (attempt - 1)"}}})
    run = Run(work, home, "--profile", "profiles/slurm-status", "--configfile", "status.yaml")
    try:
        wait_for(work / NLI_STATE, run)
        first = [j for j, c, _ in squeue(work) if c == NLI_COMMENT]
        assert len(first) == 1, squeue(work)
        cancel(first)
        t0 = time.monotonic()
        while not (second := running(work, NLI_COMMENT, first[0])):
            assert run.proc.poll() is None, f"no second attempt:\n{run.out[-4000:]}"
            assert time.monotonic() - t0 < 300, "the retry never started"
            time.sleep(0.2)
        time.sleep(1)
        cancel([second])
        assert run.wait() != 0, run.out[-4000:]
    finally:
        cancel([j for j, _, _ in squeue(work)])
    return work, run, first[0], second


def board(work: Path, home_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ckptsweep"), "status", "--configfile", "status.yaml",
                           "--profile", "profiles/slurm-status", *args], cwd=work,
                          env=env(home_dir), capture_output=True, text=True, timeout=300)


@pytest.mark.slurm
@pytest.mark.workflow
def test_slurm_board_names_each_failure_and_its_cause(failed_run, home):
    work, run, first, second = failed_run
    proc = board(work, home, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    jobs = {(j["rule"], j["job"]): j for j in report["jobs"]}
    nli, summ, oom = jobs["finetune", NLI], jobs["finetune", SUMM], jobs["evaluate", OOM]
    assert (nli["state"], nli["cause"], nli["attempts"]) == ("failed", "CANCELLED", 2), nli
    assert nli["slurm_jobid"] == second and nli["resume_step"] >= 50, nli
    assert nli["steps"] == 4800  # 48 examples x 300 epochs / batch 3
    assert (summ["state"], summ["cause"], summ["attempts"]) == ("failed", "FAILED (exit 1)", 2)
    assert "cuda" in summ["error"].lower() or "nvidia" in summ["error"].lower(), summ
    assert summ["log"] == f"logs/finetune/{SUMM}.log" and "resume_step" not in summ
    assert (oom["state"], oom["cause"], oom["attempts"]) == ("failed", "OUT_OF_MEMORY", 2)
    assert oom["slurm_log"].startswith(".snakemake/slurm_logs/rule_evaluate/tiny2_30/")
    failed = {k for k, j in jobs.items() if j["state"] == "failed"}
    assert failed == {("finetune", NLI), ("finetune", SUMM), ("evaluate", OOM)}
    assert {j["state"] for j in jobs.values()} == {"done", "pending", "failed"}
    assert jobs["evaluate", "tiny/30"]["state"] == "pending"
    for rule in ("world", "pretrain", "checkpoints"):
        assert all(j["state"] == "done" for (r, _), j in jobs.items() if r == rule), rule
    assert report["summary"]["finetune"]["failed"] == 2
    assert report["slurm"].startswith("sacct --name")
    text = board(work, home).stdout
    summary, _, lines = text.partition("\n\n")[2].partition("\n\n")
    assert summary.splitlines()[0].split() == ["rule", "done", "pending", "running",
                                               "incomplete", "failed", "total"]
    assert f"resumable at step {nli['resume_step']:,} of 4,800" in text
    assert "OUT_OF_MEMORY, 2 attempts" in text and "FAILED (exit 1), 2 attempts" in text


@pytest.mark.slurm
@pytest.mark.workflow
def test_slurm_rerun_command_reruns_exactly_the_failures(failed_run, home):
    work, *_ = failed_run
    cmd = json.loads(board(work, home, "--json").stdout)["command"]
    assert cmd == ("snakemake --profile profiles/slurm-status --configfile status.yaml "
                   f"--rerun-incomplete results/models/{NLI} results/models/{SUMM} "
                   f"results/predictions/{OOM}")
    assert board(work, home).stdout.rstrip().endswith(cmd)
    dry = subprocess.run([str(BIN / "snakemake"), "-n", *cmd.split()[1:]], cwd=work,
                         env=env(home), capture_output=True, text=True, timeout=300)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out
    assert job_counts(out) == {"evaluate": 1, "finetune": 2, "total": 3}, out

"""profiles/slurm against a real Slurm: a single-node cluster on this machine
(tools/slurm-local.sh: munge, slurmctld, slurmd, slurmdbd + MariaDB, two fake GPUs of gres
type `testgpu`, cgroup memory enforcement), started by the session fixture when it is not
running. Outside CI the tests skip, loudly, when no cluster can be had; in CI (CI=true)
that is a failure.

One small study (tests/config/slurm/tiny.yaml: one checkpoint, two fine-tunes, three
evaluations) runs once through `--profile profiles/slurm` from scratch, with its longest
fine-tune cancelled (`scancel`) after its first saved state, and once locally; the other
failure tests run on copies of the finished run, so that only a few jobs are re-submitted:

- the scheduled run completes, every job ran on Slurm (sacct), and the scores and weights
  equal the local run's: the cancelled fine-tune was retried and resumed from its state;
- `snakemake --profile slurm` (the bare name, after `make slurm-profile`), killed with
  SIGKILL while a fine-tune runs, then re-run: the fine-tune resumes, finished jobs stay;
- an evaluation over its memory (cgroup OUT_OF_MEMORY) succeeds on attempt 2 with twice
  the memory, while a job that sbatch refuses (3 GPUs on a 2-GPU node) fails alone;
- config errors are refused by validation before anything is submitted.

The profile is used as shipped but for the site values a user edits (partition, account,
GPU model; memory sized for a small node): tests/config/slurm/overlay.yaml, laid over it.
Kills are triggered by the resume-state file appearing, never by a timer.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROFILE = ROOT / "profiles/slurm/config.yaml"
OVERLAY = ROOT / "tests/config/slurm/overlay.yaml"
TINY = "tests/config/slurm/tiny.yaml"
TOOL = ROOT / "tools/slurm-local.sh"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The cluster the tests need: cgroup memory enforcement (the OOM test) and a short
# KillWait, so that a cancelled job's command is killed 2 s after the cancel (see the
# profile's note on signals). .ci/run starts it with the same settings.
CLUSTER_ENV = {"SLURM_LOCAL_CGROUP": "1", "SLURM_LOCAL_KILLWAIT": "2"}

STEP = "tiny/30"
NLI = f"results/models/{STEP}/nli-lr1e-3-s0"  # long enough to be stopped mid-way
SUMM = f"results/models/{STEP}/summ-lr1e-3-s0"
EVAL = f"results/predictions/{STEP}"  # the checkpoint's evaluation: one file per variant
BASE_PRED = f"{EVAL}/base.parquet"
ABLATION = "results/ablation/tiny.parquet"
NLI_STATE = f"resources/resume/{STEP}/nli-lr1e-3-s0/state.pt"
NLI_LOG = f"logs/finetune/{STEP}/nli-lr1e-3-s0.log"
NLI_COMMENT = "rule_finetune_wildcards_tiny_30_nli-lr1e-3-s0"
GPU_RULES = {"pretrain", "finetune", "evaluate", "ablation", "proxy", "bpb"}
# Rules that never go to Slurm: seconds of pandas/matplotlib on the submit host.
LOCAL_RULES = {"aggregate", "tables", "figures", "all"}

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]


# ------------------------------------------------------------------------ helpers
def merged_profile(*overlays: dict) -> dict:
    """profiles/slurm/config.yaml with overlays laid over it: a key replaces the
    profile's, but default-resources and set-resources are merged resource by resource."""
    prof = yaml.safe_load(PROFILE.read_text())
    for over in overlays:
        for key, value in over.items():
            if key == "default-resources":
                prof[key] = {**prof.get(key, {}), **value}
            elif key == "set-resources":
                rules = copy.deepcopy(prof.get(key, {}))
                for rule, res in value.items():
                    rules[rule] = {**rules.get(rule, {}), **res}
                prof[key] = rules
            else:
                prof[key] = value
    return prof


def write_profile(work: Path, name: str, *overlays: dict) -> None:
    site = yaml.safe_load(OVERLAY.read_text())
    folder = work / "profiles" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(merged_profile(site, *overlays),
                                                       sort_keys=False))


def workcopy(dst: Path) -> Path:
    """The workflow in a fresh folder, its profiles/slurm edited for this cluster."""
    copy_workflow(dst, extra=("Makefile",))
    write_profile(dst, "slurm")
    return dst


def clone(src: Path, dst: Path) -> Path:
    """A copy of a finished run (outputs, mtimes and .snakemake metadata kept)."""
    shutil.copytree(src, dst, symlinks=True)
    shutil.rmtree(dst / ".snakemake/locks", ignore_errors=True)
    return dst


def env(home: Path) -> dict:
    # Jobs inherit this environment (sbatch --export=ALL): the venv's snakemake and
    # ckptsweep; HOME holds the user profile folder of the bare-name test.
    return {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(home), "LC_ALL": "C.UTF-8"}


class Run:
    """A snakemake process whose output is collected by a thread (no pipe stalls)."""

    def __init__(self, work: Path, home: Path, *args: str):
        self.args = args
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / "snakemake"), *args], cwd=work,
                                     env=env(home), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.chunks: list[str] = []
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        self.chunks.extend(self.proc.stdout)
        self.seconds = time.monotonic() - self.t0  # output closed: the process ended

    @property
    def out(self) -> str:
        return "".join(self.chunks)

    def wait(self, timeout: float = 900) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.reader.join()
            raise AssertionError(
                f"snakemake {' '.join(self.args)} hung:\n{self.out[-6000:]}") from None
        self.reader.join()
        return self.proc.returncode

    def check(self, timeout: float = 900) -> Run:
        rc = self.wait(timeout)
        assert rc == 0, f"snakemake {' '.join(self.args)} failed:\n{self.out[-8000:]}"
        return self


def wait_for(path: Path, run: Run, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert run.proc.poll() is None, f"snakemake ended before {path} appeared:\n{run.out}"
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.02)


def squeue(work: Path) -> list[tuple[str, str, str]]:
    """(job id, comment, state) of the active jobs submitted from ``work``."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%Z|%T"], capture_output=True,
                         text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [(r[0], r[1], r[3]) for r in rows if Path(r[2]) == work]


def cancel(job_ids, wait: bool = True) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False)
    t0 = time.monotonic()
    while wait and time.monotonic() - t0 < 60:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)],
                             capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.2)


@dataclass
class Job:
    id: str
    rule: str
    wildcards: str
    state: str
    req_mem: str
    tres: str


def sacct(work: Path, expect: int = 0) -> list[Job]:
    """The jobs that Slurm ran from ``work``, oldest first (waits for ``expect`` rows:
    slurmdbd records a job's end a moment after squeue shows it)."""
    t0 = time.monotonic()
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-S", "now-3hours", "-o",
             "JobIDRaw,State,Comment,WorkDir,ReqMem,AllocTRES"],
            capture_output=True, text=True, check=True).stdout
        jobs = []
        for line in out.splitlines():
            jobid, state, comment, workdir, mem, tres = line.split("|")
            if Path(workdir) == work:
                rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
                jobs.append((int(jobid), Job(jobid, rule, wildcards, state, mem, tres)))
        if len(jobs) >= expect or time.monotonic() - t0 > 30:
            return [j for _, j in sorted(jobs, key=lambda x: x[0])]
        time.sleep(0.5)


def submitted(out: str) -> dict[str, str]:
    """SLURM job id -> rule of every job snakemake submitted, from its output."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", out)
    return dict(found)


def same_weights(a: Path, b: Path) -> None:
    """Two saved models hold the same tensors, byte for byte."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files, f"no weights in {a}"
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs"


# ------------------------------------------------------------------------ cluster
def cluster_problem() -> str:
    """Why no usable node is there, or '' when there is one."""
    if not shutil.which("sinfo"):
        return "sinfo not found (no Slurm client installed)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T|%G|%P"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    states = {line.split("|")[0].rstrip("*~#$@+") for line in proc.stdout.splitlines()}
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return f"no usable node (states: {sorted(states) or 'none'})"
    if "testgpu" not in proc.stdout or "debug" not in proc.stdout:
        return "the running Slurm is not tools/slurm-local.sh's (no debug partition/testgpu)"
    return ""


def daemons_running() -> bool:
    proc = subprocess.run(["bash", str(TOOL), "status"], capture_output=True, text=True)
    return proc.returncode == 0 and "slurmctld: running" in proc.stdout


@pytest.fixture(scope="session")
def cluster():
    """The local cluster, started (and at the end stopped) here unless already up."""
    started, log = False, ""
    if os.geteuid() == 0 and TOOL.exists():
        was_running = daemons_running()
        proc = subprocess.run(["bash", str(TOOL), "up"], env={**os.environ, **CLUSTER_ENV},
                              capture_output=True, text=True, timeout=900)
        log = proc.stderr[-3000:]
        started = proc.returncode == 0 and not was_running
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
        problem = cluster_problem()
    except ImportError:
        problem = "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    if not problem:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True,
                                text=True).stdout
        if "proctrack/cgroup" not in config:
            problem = "the cluster runs without cgroup enforcement (SLURM_LOCAL_CGROUP=1)"
    if problem:
        why = " Not root, so tools/slurm-local.sh could not start one." if os.geteuid() else ""
        msg = f"REAL SLURM NOT AVAILABLE, the Slurm tests did not run: {problem}.{why}\n{log}"
        if IN_CI:
            pytest.fail(msg)
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    yield
    if started:
        subprocess.run(["bash", str(TOOL), "down"], capture_output=True)


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """HOME of the snakemake runs: its ~/.config/snakemake holds the bare-name profile."""
    return tmp_path_factory.mktemp("home")


@dataclass
class Runs:
    local: Path
    slurm: Path
    slurm_run: Run
    local_run: Run
    cancelled: str


@pytest.fixture(scope="module")
def runs(cluster, home, tmp_path_factory):
    """The tiny study run locally and through profiles/slurm (in parallel: the Slurm run
    mostly waits); in the Slurm run the nli fine-tune is cancelled after its first state."""
    local = workcopy(tmp_path_factory.mktemp("local"))
    work = workcopy(tmp_path_factory.mktemp("slurm"))
    local_run = Run(local, home, "--profile", "profiles/local", "--cores", "2",
                    "--configfile", TINY)
    slurm_run = Run(work, home, "--profile", "profiles/slurm", "--configfile", TINY)
    try:
        wait_for(work / NLI_STATE, slurm_run)
        job = [j for j, comment, _ in squeue(work) if comment == NLI_COMMENT]
        assert len(job) == 1, squeue(work)
        cancel(job)
        slurm_run.check()
    finally:
        cancel([j for j, _, _ in squeue(work)])
    local_run.check()
    print(f"\nSlurm run: {slurm_run.seconds:.0f}s, local run: {local_run.seconds:.0f}s")
    return Runs(local, work, slurm_run, local_run, job[0])


# ------------------------------------------------------------------------ the profile
def test_profile_documents_every_key_and_scales_with_attempt():
    """Static checks of the shipped profile (no cluster needed)."""
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    text = PROFILE.read_text()
    prof = yaml.safe_load(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):  # every key has a comment on the line(s) above
        if re.match(r"^[a-z][\w-]*:", line):
            assert lines[i - 1].startswith("#"), f"profile key without a comment: {line}"
    assert "EDIT" in text and "slurm_partition" in prof["default-resources"]
    assert "slurm_account" in prof["default-resources"]
    assert prof["executor"] == "slurm" and prof["slurm-no-requeue"] is True
    assert prof["retries"] >= 1 and prof["rerun-incomplete"] and prof["keep-going"]
    assert prof["scheduler"] == "greedy" and prof["latency-wait"] >= 30
    assert prof["slurm-status-command"] == "squeue"
    # One GPU model for every GPU rule, written once (a YAML anchor, the others alias it).
    assert re.findall(r"^\s*gpu_model:\s*(\S.*)$", text, re.M) == (
        ["&gpu_model A100"] + ["*gpu_model"] * (len(GPU_RULES) - 1))
    resources = prof["set-resources"]
    # A fine-tune's GPUs come from its rule (finetune.gpus, default 1): a profile value
    # would override a sharded fine-tune's `gpus: 8`.
    fixed = GPU_RULES - {"finetune"}
    assert {r: resources[r]["gpu"] for r in fixed} == dict.fromkeys(fixed, 1)
    assert "gpu" not in resources["finetune"]
    assert {resources[r]["gpu_model"] for r in GPU_RULES} == {"A100"}
    forbidden = get_forbidden_slurm_options()
    for rule, res in resources.items():
        extra = str(res.get("slurm_extra", ""))
        for pattern, what in forbidden.items():
            assert not re.search(pattern, extra), f"{rule}: {what} in slurm_extra"
    assert "--signal=TERM@300" in resources["finetune"]["slurm_extra"]
    # Memory and time grow with the attempt, for every rule.
    for rule, res in [("default", prof["default-resources"]), *resources.items()]:
        for key in ("mem_mb", "runtime"):
            if key in res:
                values = [eval(str(res[key]), {"attempt": a}) for a in (1, 2, 3)]
                assert values[0] < values[1] < values[2], (rule, key, values)


def test_dry_run_shows_gpu_requests(tmp_path, home):
    work = workcopy(tmp_path)
    shutil.copy(PROFILE, work / "profiles/slurm/config.yaml")  # as shipped
    run = Run(work, home, "-n", "--profile", "profiles/slurm", "--configfile", TINY).check()
    for rule in ("pretrain", "finetune", "evaluate"):
        block = run.out.split(f"\nrule {rule}:", 1)[1].split("\n\n", 1)[0]
        assert "gpu=1" in block and "gpu_model=A100" in block, block
    assert "slurm_partition=gpu" in run.out and "slurm_account=my_account" in run.out


@pytest.mark.parametrize("case", ["unknown_task", "bad_name", "missing_key"])
def test_config_errors_are_refused_before_submission(case, tmp_path, home):
    work = workcopy(tmp_path)
    cfg = yaml.safe_load((ROOT / TINY).read_text())
    if case == "unknown_task":
        cfg["finetune"]["tasks"]["unknown_task"] = {}
        key = "finetune.tasks.unknown_task"
    elif case == "bad_name":  # a name that would reach file paths and shell commands
        cfg["datasets"]["nli$(touch PWNED)"] = cfg["datasets"].pop("nli")
        key = "nli$(touch PWNED)"
    else:
        del cfg["evaluation"]
        key = "evaluation: required key missing"
    (work / "bad.yaml").write_text(yaml.safe_dump(cfg))
    run = Run(work, home, "--profile", "profiles/slurm", "--configfile", "bad.yaml")
    assert run.wait() != 0
    assert key in run.out, run.out[-3000:]
    assert "has been submitted" not in run.out
    assert not (work / ".snakemake/slurm_logs").exists() and not (work / "PWNED").exists()


# ------------------------------------------------------------------------ the scheduled run
def test_scheduled_run_matches_the_local_run(runs):
    import pandas as pd

    keys = ["model", "step", "variant", "eval_set", "format", "shots", "metric"]
    a = pd.read_parquet(runs.slurm / "results/scores.parquet").sort_values(keys)
    b = pd.read_parquet(runs.local / "results/scores.parquet").sort_values(keys)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    for model in (NLI, SUMM):
        same_weights(runs.slurm / model, runs.local / model)
    assert (runs.slurm / "results/tables/gpu_hours.csv").exists()


def test_every_job_ran_on_the_scheduler(runs):
    """Every job snakemake submitted is in Slurm's accounting, completed (but the one
    cancelled on purpose), with a GPU exactly for the GPU rules; the localrules are not."""
    ids = submitted(runs.slurm_run.out)
    jobs = sacct(runs.slurm, expect=len(ids))
    assert {j.id: j.rule for j in jobs} == ids
    assert {"pretrain", "finetune", "evaluate"} <= set(ids.values())
    assert not LOCAL_RULES & set(ids.values())
    for j in jobs:
        assert j.state == "COMPLETED" or j.id == runs.cancelled, (j.rule, j.wildcards, j.state)
        assert ("gres/gpu=1" in j.tres) == (j.rule in GPU_RULES), (j.rule, j.tres)


def test_cancelled_fine_tune_resumes_and_nothing_else_reruns(runs):
    """scancel after the first saved state: Snakemake retries the job (attempt 2), which
    resumes from the state; every other job ran exactly once."""
    import json

    jobs = sacct(runs.slurm, expect=len(submitted(runs.slurm_run.out)))
    nli = [j for j in jobs if j.rule == "finetune" and j.wildcards.endswith("nli-lr1e-3-s0")]
    assert [j.state.split()[0] for j in nli] == ["CANCELLED", "COMPLETED"], nli
    assert nli[0].id == runs.cancelled
    others = [(j.rule, j.wildcards) for j in jobs if j not in nli]
    assert len(others) == len(set(others)), others
    info = json.loads((runs.slurm / NLI / "finetune.json").read_text())
    assert info["stats"]["resumed_at_step"] >= 50  # finetune.save_every in tiny.yaml
    log = (runs.slurm / NLI_LOG).read_text()
    assert "resumed from" in log and "--attempt 2" in runs.slurm_run.out
    assert not (runs.slurm / NLI_STATE).parent.exists(), "a finished job removes its state"


# ------------------------------------------------------------------------ failures
def test_killed_snakemake_then_rerun_incomplete_resumes(runs, home, tmp_path, failures):
    """The bare profile name after `make slurm-profile`. snakemake is SIGKILLed while a
    fine-tune runs (its checkpoints job finished before); the operator cancels the orphan
    job, unlocks and re-runs: the fine-tune resumes, the finished job is not redone.
    (`failures` only starts that run now, beside this one.)"""
    work = clone(runs.slurm, tmp_path / "work")
    make = subprocess.run(["make", "slurm-profile"], cwd=work, env=env(home),
                          capture_output=True, text=True)
    assert make.returncode == 0, make.stdout + make.stderr
    linked = home / ".config/snakemake/slurm"
    assert linked.resolve() == (work / "profiles/slurm").resolve()
    manifest = work / "resources/checkpoints/tiny/30.tsv"
    args = (NLI, "--profile", "slurm", "--configfile", TINY)
    run = Run(work, home, *args, "--forcerun", "checkpoints")
    try:
        wait_for(work / NLI_STATE, run)
        run.proc.send_signal(signal.SIGKILL)
        run.wait()
        orphans = squeue(work)
        assert [c for _, c, _ in orphans] == [NLI_COMMENT], orphans  # still running
        cancel([j for j, _, _ in orphans])
    finally:
        cancel([j for j, _, _ in squeue(work)])
    assert "Using profile slurm " in run.out
    mtime = manifest.stat().st_mtime
    Run(work, home, "--profile", "slurm", "--configfile", TINY, "--unlock").check()
    rerun = Run(work, home, *args).check()
    assert "\nrule finetune:" in rerun.out, rerun.out
    assert not re.search(r"\n(local)?rule checkpoints:", rerun.out), rerun.out
    assert manifest.stat().st_mtime == mtime
    assert "resumed from" in (work / NLI_LOG).read_text()
    same_weights(work / NLI, runs.local / NLI)


@pytest.fixture(scope="module")
def failures(runs, home, tmp_path_factory):
    """One run of two forced, independent jobs: the checkpoint's evaluation with too
    little memory on attempt 1 (the profile's doubling from a 500 MB base; the job needs
    ~700 MB), and the ablation asking for 3 GPUs on a 2-GPU node, which sbatch refuses on
    every attempt. Started in the background (the killed-snakemake test runs meanwhile:
    one CPU and GPU each)."""
    work = clone(runs.slurm, tmp_path_factory.mktemp("failures") / "work")
    write_profile(work, "slurm-failures", {"set-resources": {
        "evaluate": {"mem_mb": "500 * 2 ** (attempt - 1)"}, "ablation": {"gpu": 3}}})
    run = Run(work, home, "--profile", "profiles/slurm-failures", "--configfile", TINY,
              "--prioritize", EVAL, "--forcerun", EVAL, ABLATION, "--", EVAL, ABLATION)
    yield work, run
    if run.proc.poll() is None:
        run.proc.kill()
    cancel([j for j, _, _ in squeue(work)])


def test_job_over_its_memory_succeeds_on_attempt_2(failures, runs):
    import pandas as pd

    work, run = failures
    run.wait()
    evals = [j for j in sacct(work, expect=2) if j.rule == "evaluate"]
    assert [(j.state, j.req_mem) for j in evals] == [("FAILED", "500M"),
                                                     ("COMPLETED", "1000M")], evals
    steps = subprocess.run(["sacct", "-n", "-P", "-j", evals[0].id, "-o", "JobID,State"],
                           capture_output=True, text=True, check=True).stdout
    assert f"{evals[0].id}.0|OUT_OF_MEMORY" in steps, steps  # the cgroup killed it
    pd.testing.assert_frame_equal(pd.read_parquet(work / BASE_PRED),
                                  pd.read_parquet(runs.slurm / BASE_PRED))


def test_sbatch_refusal_fails_that_job_only(failures):
    work, run = failures
    assert run.wait() != 0
    out = run.out
    assert "SLURM sbatch failed" in out
    assert "Requested node configuration is not available" in out
    first = out.index("SLURM sbatch failed")
    assert "Error in rule ablation:" in out[first - 200:first]
    # The evaluation still ran to the end on the scheduler, whichever of the two
    # independent jobs Snakemake happened to submit first (CI saw both orders).
    assert "has been submitted with SLURM jobid" in out
    assert out.count("SLURM sbatch failed") == 3  # attempt 1 and both retries
    # slurmdbd records a refused submission as a FAILED job that never got resources.
    refused = [j for j in sacct(work) if j.rule == "ablation"]
    assert all(j.state == "FAILED" and not j.tres for j in refused), refused
    assert "(Rule: evaluate)" in out and (work / BASE_PRED).exists()

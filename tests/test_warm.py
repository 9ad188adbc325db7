"""`ckptsweep warm`: jobs forked from a server that imported torch and transformers once
compute what the same jobs compute cold, report their errors and exit status, save their
state on SIGTERM, stop when their command dies, and run cold when the server is gone.
The whole tiny workflow under `ckptsweep warm` is compared with the cold one in
test_workflow.py."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ckptsweep.train.state import STATE_FILE

from .test_resume import command, reference, resume, signal_at_first_state

BIN = Path(sys.executable).parent / "ckptsweep"
WORKER = "ckptsweep warm: worker"
"""What a worker writes to its job's log when the job ends."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A warm server whose command only waits: its socket address."""
    folder = tmp_path_factory.mktemp("warm")
    address = folder / "address"
    proc = subprocess.Popen([str(BIN), "warm", "--", "sh", "-c",
                             f'echo "$CKPTSWEEP_WARM" > {address}; exec cat >/dev/null'],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not address.exists() or not address.read_text().strip():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    yield address.read_text().strip()
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()


def env(address: str) -> dict[str, str]:
    return {**os.environ, "CKPTSWEEP_WARM": address}


def test_a_warm_fine_tune_equals_a_cold_one(job, server):
    done = subprocess.run(command(job), env=env(server), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert WORKER in done.stderr  # it ran in a worker, not cold
    from ckptsweep.checkpoints.load import load

    from .test_finetune import weights

    assert torch.equal(weights(load(job / "out")[0]), reference(job))


def test_a_failed_job_reports_its_error_and_status(server, tmp_path):
    done = subprocess.run([str(BIN), "evaluate", "--spec", "{", "--manifest", "m.tsv",
                           "--out", str(tmp_path / "out")], env=env(server),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "error: --spec is not valid JSON" in done.stderr and WORKER in done.stderr


def stop_at_first_state(job, server, sig):
    """A warm fine-tune sent ``sig`` once it saved a state; its process and everything
    its worker wrote (read to the end: the worker has closed the log)."""
    proc = signal_at_first_state(job, sig, env=env(server))
    out = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout=120)
    assert not reader.is_alive(), "the worker kept the job's log open: it is still running"
    proc.wait(timeout=10)
    return proc, out[0]


def test_sigterm_reaches_the_worker_which_saves_its_state(job, server):
    proc, out = stop_at_first_state(job, server, signal.SIGTERM)
    assert proc.returncode == 143, out
    assert "SIGTERM: stopped after step" in out and "a re-run resumes from it" in out
    assert (job / "resume" / STATE_FILE).exists() and not (job / "out").exists()
    assert torch.equal(resume(job), reference(job))


def test_a_killed_command_stops_its_worker(job, server):
    proc, out = stop_at_first_state(job, server, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    # The worker saw its command go, stopped as on SIGTERM and closed the log.
    assert "SIGTERM: stopped after step" in out, out
    assert not (job / "out").exists()
    assert torch.equal(resume(job), reference(job))


def test_without_a_server_a_job_runs_cold_and_says_so(tmp_path):
    done = subprocess.run([str(BIN), "evaluate", "--spec", "{", "--manifest", "m.tsv",
                           "--out", str(tmp_path / "out")],
                          env=env(str(tmp_path / "gone.socket")), capture_output=True,
                          text=True, timeout=120)
    assert "is not reachable" in done.stderr and "running this job cold" in done.stderr
    assert "error: --spec is not valid JSON" in done.stderr and WORKER not in done.stderr
    assert done.returncode == 1


def test_inside_a_slurm_job_nothing_runs_warm(server, tmp_path):
    done = subprocess.run([str(BIN), "evaluate", "--spec", "{", "--manifest", "m.tsv",
                           "--out", str(tmp_path / "out")],
                          env={**env(server), "SLURM_JOB_ID": "7"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "not valid JSON" in done.stderr
    assert WORKER not in done.stderr


def test_stopping_the_server_stops_its_command_first():
    proc = subprocess.Popen([str(BIN), "warm", "--", "sleep", "600"], stderr=subprocess.PIPE,
                            text=True)
    line = proc.stderr.readline()  # the server has imported and started its command
    assert "ckptsweep warm: job code imported" in line, line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # sleep's end, passed on

"""Stopping early on purpose: SIGTERM (Slurm's warning before a time-out or pre-emption,
forwarded by torchrun) or a Slurm job's time limit drawing near. Either way the loop
saves its state at the next step boundary and raises `Interrupted`."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class Interrupted(RuntimeError):
    """SIGTERM arrived; the state was saved at the step boundary and the job must exit
    non-zero, so that the scheduler re-runs it (and the re-run resumes)."""


@contextmanager
def sigterm_flag():
    """An Event set by SIGTERM while the loop runs. The handler only sets the flag: the
    loop saves at the next step boundary, where the state is consistent."""
    stop = threading.Event()
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    except ValueError:  # not the main thread (a test runner's worker): no handler
        previous = None
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def slurm_deadline(margin: float, log=print) -> float | None:
    """``time.time()`` at which a Slurm job should save and stop: its end time (Slurm's
    ``SLURM_JOB_END_TIME``, else ``squeue``'s) minus ``margin``; None outside Slurm or
    without a known end time."""
    import subprocess
    from datetime import datetime

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME")
    if end and end.isdigit():
        return int(end) - margin
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
        return datetime.fromisoformat(out).timestamp() - margin  # Slurm's local time
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        log(f"Slurm job {job}: no end time ({err!r}); relying on SIGTERM and save_every")
        return None

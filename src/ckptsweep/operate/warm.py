"""`ckptsweep warm -- CMD...`: run CMD (a local Snakemake run) with its heavy jobs forked
from one process that has already imported torch and transformers.

Why: on a CPU, importing torch and transformers takes 4-6 s of every pre-training,
fine-tune and evaluation job: about 40 % of the demo's job-seconds, in code that is not
ours (transformers' ``modeling_utils`` pulls in ``torch._dynamo``, ``torch.distributed``,
sympy and scipy). A Slurm job pays it once per GPU-hour and never runs warm.

How: the server imports the job code once, listens on a Unix socket and gives CMD its
address in ``CKPTSWEEP_WARM``. ``ckptsweep <verb>``, for a verb that imports torch
(`VERBS`), then sends its arguments, working directory, environment and
standard streams (the job's log) to the server, which forks a worker that runs the verb
exactly as the command would have, and sends back its exit status. Signals the command
gets go to the worker (a fine-tune saves its state on SIGTERM); a command that dies stops
its worker. If the server is gone, the command runs cold and says so. Python's
``socketserver`` forks per request and reaps; this module adds the passing of the streams
and the exit status, which no library does for a client that is not its own child.

Same inputs, same code, same numbers: `tests/test_warm.py` pins a warm job's outputs to
the cold job's, byte for byte. What differs: Snakemake's ``benchmark:`` measures the
waiting command, so its ``s`` is the job's wall time but its CPU and memory columns are
the command's, not the worker's (the worker writes its own to the log).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable

ENV = "CKPTSWEEP_WARM"
"""The server's socket, in the environment of CMD and of the jobs it starts."""
VERBS = frozenset({"pretrain", "finetune", "evaluate", "ablation", "attribute", "proxy",
                   "bpb"})
"""The verbs that import torch and transformers: they run in a worker; the others, cold."""
WORKER = "CKPTSWEEP_WARM_WORKER"
"""Set in a worker: a job that would replace its process (torchrun) refuses instead."""
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "ckptsweep.train.job",
           "ckptsweep.train.pretrain", "ckptsweep.evaluate.job", "ckptsweep.evaluate.proxy",
           "ckptsweep.evaluate.bpb", "ckptsweep.attribution.run")
"""What the server imports once, before any worker forks."""
_LEN = 8  # bytes of a length or a status on the socket


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# --- the command's side -------------------------------------------------------------


def run(argv: list[str]) -> int | None:
    """Run ``ckptsweep <argv>`` in a worker of the server named by ``CKPTSWEEP_WARM`` and
    return its exit status; None for a verb that does not run warm, or when the server
    cannot be reached (the caller runs the job itself)."""
    if not argv or argv[0] not in VERBS:
        return None
    address = os.environ.get(ENV, "")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except OSError as e:
        print(f"ckptsweep: the warm server {address!r} is not reachable ({e.strerror or e}):"
              " running this job cold", file=sys.stderr, flush=True)
        sock.close()
        return None
    env = {k: v for k, v in os.environ.items() if k != ENV}
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": env}).encode()
    socket.send_fds(sock, [len(payload).to_bytes(_LEN, "big")], [0, 1, 2])
    sock.sendall(payload)
    raw = _recv_exact(sock, _LEN)
    if raw is None:
        print("ckptsweep: the warm server closed the connection before starting the job",
              file=sys.stderr, flush=True)
        return 1
    worker = int.from_bytes(raw, "big")

    def forward(signum, frame):  # the worker decides what a signal means (finetune: save)
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    raw = _recv_exact(sock, _LEN)
    if raw is None:
        print(f"ckptsweep: the warm worker {worker} ended without an exit status "
              "(killed by a signal?)", file=sys.stderr, flush=True)
        return 1
    return int.from_bytes(raw, "big", signed=True)


# --- the server's side --------------------------------------------------------------


def _exit_code(e: SystemExit) -> int:
    """What Python's own top level makes of ``SystemExit`` (a message: printed, 1)."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


class _Worker(socketserver.BaseRequestHandler):
    """One job, in a process forked for it by the server."""

    def handle(self) -> None:
        sock = self.request
        msg, fds, _, _ = socket.recv_fds(sock, _LEN, 3)
        if len(msg) < _LEN or len(fds) != 3:
            return
        raw = _recv_exact(sock, int.from_bytes(msg, "big"))
        if raw is None:
            return
        job = json.loads(raw)
        self.server.socket.close()  # the worker serves no one
        for fd, target in zip(fds, (0, 1, 2), strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["ckptsweep", *job["argv"]]
        sock.sendall(os.getpid().to_bytes(_LEN, "big"))
        # The command went away (killed, cancelled): stop as its own job would on SIGTERM.
        threading.Thread(target=_stop_when_closed, args=(sock,), daemon=True).start()
        os.environ[WORKER] = "1"
        t0 = time.perf_counter()
        try:
            self.server.main(job["argv"])
            code = 0
        except SystemExit as e:
            code = _exit_code(e)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            traceback.print_exc()
            code = 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"ckptsweep warm: worker {os.getpid()} ran this job in "
              f"{time.perf_counter() - t0:.1f}s wall, {usage.ru_utime + usage.ru_stime:.1f}s"
              f" CPU, max RSS {usage.ru_maxrss / 1024:.0f} MB", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        sock.sendall(code.to_bytes(_LEN, "big", signed=True))


def _stop_when_closed(sock: socket.socket) -> None:
    try:
        while sock.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


class _Server(socketserver.ForkingMixIn, socketserver.UnixStreamServer):
    timeout = 0.5  # handle_request returns this often, to see whether CMD has ended

    def __init__(self, address: str, main: Callable[[list[str]], None]):
        super().__init__(address, _Worker)
        self.main = main


def preload() -> float:
    """Import the job code (after the cli, which set the jobs' environment); seconds
    taken. CUDA must stay uninitialised: a forked worker could not use it."""
    import importlib

    t0 = time.perf_counter()
    for name in PRELOAD:
        importlib.import_module(name)
    import torch

    if torch.cuda.is_initialized():
        raise SystemExit("error: importing the job code initialised CUDA; a forked worker "
                         "cannot use it: run without `ckptsweep warm`")
    return time.perf_counter() - t0


def serve(cmd: list[str], main: Callable[[list[str]], None]) -> int:
    """Run ``cmd`` with ``CKPTSWEEP_WARM`` set, serving its jobs with ``main`` (the cli's)
    until it ends; its exit status (128 + N if signal N ended it)."""
    if not cmd:
        raise SystemExit("error: ckptsweep warm: no command given (ckptsweep warm -- "
                         "snakemake ...)")
    seconds = preload()
    with tempfile.TemporaryDirectory(prefix="ckptsweep-warm-") as folder:
        address = os.path.join(folder, "socket")
        try:
            server = _Server(address, main)
        except OSError as e:  # e.g. a TMPDIR too long for a Unix socket's 107 bytes
            raise SystemExit(f"error: ckptsweep warm: cannot listen on {address}: {e}; "
                             "set TMPDIR to a shorter folder") from None
        try:
            proc = subprocess.Popen(cmd, env={**os.environ, ENV: address})
        except OSError as e:
            raise SystemExit(f"error: ckptsweep warm: cannot run {cmd[0]!r}: {e}") from None
        # Stopping the server stops CMD first (Snakemake then stops its jobs, which stop
        # their workers); the server serves until CMD has ended.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
        print(f"ckptsweep warm: job code imported in {seconds:.1f}s; serving {address}",
              file=sys.stderr, flush=True)
        while proc.poll() is None:
            try:
                server.handle_request()
            except KeyboardInterrupt:  # CMD got it too and stops its jobs: keep serving
                continue
        server.server_close()  # waits for the workers still running
    code = proc.returncode
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's 128 + N

"""Progress for long jobs: a tqdm bar on a terminal, throttled log lines in a Slurm log."""

from __future__ import annotations

import sys
import time


class Progress:
    """A bar when stderr is a terminal; otherwise one log line every ``every`` seconds (and
    at the end), so a batch job's log stays readable and small."""

    def __init__(self, total: int, desc: str, log=print, every: float = 15.0):
        self.total, self.desc, self.log, self.every = total, desc, log, every
        self.start = self.last = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, mininterval=0.5)

    def due(self, done: int) -> bool:
        """Whether an update at ``done`` would show its stats (a bar refreshes every half
        second, a log line every ``every`` seconds): a caller whose stats cost something to
        compute (a value read back from the GPU) computes them only then."""
        interval = 0.5 if self.bar is not None else self.every
        return done == self.total or time.perf_counter() - self.last >= interval

    def update(self, done: int, **stats: float) -> None:
        """Record ``done`` steps; show ``stats`` (when given) if an update is due."""
        now = time.perf_counter()
        if self.bar is not None:
            if stats:
                self.last = now
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()}, refresh=False)
            self.bar.update(done - self.bar.n)  # redraws at most every mininterval
            if done == self.total:
                self.bar.close()
            return
        if now - self.last >= self.every or done == self.total:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            extra = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            self.log(f"{self.desc}: {done}/{self.total} ({rate:.1f}/s) {extra}".rstrip())


def log(msg: str) -> None:
    """One timestamped line of a job's log, flushed at once (a killed job keeps it)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

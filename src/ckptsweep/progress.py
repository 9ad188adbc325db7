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

    def update(self, done: int, **stats: float) -> None:
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()}, refresh=False)
            self.bar.refresh() if done == self.total else None
            if done == self.total:
                self.bar.close()
            return
        if now - self.last >= self.every or done == self.total:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            extra = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            self.log(f"{self.desc}: {done}/{self.total} ({rate:.1f}/s) {extra}".rstrip())

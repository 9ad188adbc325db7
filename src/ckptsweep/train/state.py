"""The resume state of a fine-tune: written by `save_state`, read back by `load_state`.

Resumable: with a ``resume_dir`` the loop writes its whole state (weights, AdamW moments,
schedule, RNG states, the epoch's example order and position, the losses so far) every
``save_every`` optimizer steps and when SIGTERM arrives (Slurm's warning before a time-out
or pre-emption), and a re-run picks up from it and ends with the same weights, bit for bit
on CPU with the same threads, as a run that was never stopped. The state records its
position in optimizer steps, and an optimizer step always covers the same examples
whatever the micro-batch, so a state written by attempt 1 stays valid for an OOM retry
that halves the micro-batch (the weights then agree within float tolerance, not bit for
bit: the summation order changes). A state written for other settings or other data is
discarded with a log line.

One implementation for one process and for several: ``state.pt`` holds the position,
schedule, RNG states, fingerprint and losses; the weights and AdamW moments go where the
run's strategy (`ckptsweep.train.strategy`) puts them: into ``state.pt`` itself (one
process), or as each rank's shards into ``shards-<step>/`` (sharded), which ``state.pt``
names and which are complete before ``state.pt`` is written.

Loading runs no code from the file. The resume folder may sit on a shared file system,
where a planted or corrupted file must not be able to execute anything, so the state is
read with ``torch.load(weights_only=True)``: it rebuilds tensors and plain Python values
(dict, list, tuple, str, bytes, numbers) and refuses any other object a pickle names, such
as a class whose ``__reduce__`` calls a function. Everything saved is such a value: the
loop's position as a dict, Python's RNG state as its tuple of ints, the schedule's state
dict (LambdaLR keeps no functions in it). A state that fails to load, is incomplete or
was written for other settings is discarded with a log line and training starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckptsweep.files import atomic_write
from ckptsweep.train.config import RUNTIME_ONLY, FinetuneConfig

STATE_FILE = "state.pt"
FORMAT = 2
"""Layout of ``state.pt``; a state of another layout (an older version's) is discarded."""


@dataclass
class TrainState:
    """Where the loop is: everything beyond the model, optimizer and RNGs that a resumed
    run needs to continue exactly."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    order: list[int] | None = None
    """This epoch's example order (None: not drawn yet)."""
    pos: int = 0
    """Optimizer steps done within this epoch."""
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    """Non-pad tokens trained on so far."""


def fingerprint(cfg: FinetuneConfig, examples, model) -> str:
    """What a resume state must have been written for: the settings that change the result
    (the effective batch, not its split), the encoded examples, and the starting weights
    (a cheap sample of them, taken before the first step)."""
    h = hashlib.sha256()
    settings = {k: v for k, v in asdict(cfg).items() if k not in RUNTIME_ONLY}
    h.update(json.dumps({**settings, "effective_batch": cfg.effective_batch},
                        sort_keys=True).encode())
    h.update(json.dumps(examples).encode())
    params = list(model.parameters())
    for p in (params[0], params[-1]):
        h.update(p.detach().flatten()[:65536].float().cpu().numpy().tobytes())
    return h.hexdigest()


def save_state(path: Path, strategy, state: TrainState, model, opt, sched, rng,
               fp: str) -> None:
    """Write the resumable state; every process of the run calls it at the same step.

    The weights and AdamW moments first, where ``strategy`` keeps them; then the main
    process writes ``state.pt`` atomically (`write_state_file`) and removes the shards of
    older saves. A kill at any point leaves the previous ``state.pt`` and what it names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = strategy.save_weights(path, state.step, model, opt)
    rngs = strategy.gather(rng_state(strategy.cuda_devices))
    if strategy.is_main:
        blob = {"format": FORMAT, "fingerprint": fp, "train": asdict(state),
                "scheduler": sched.state_dict(), "python_rng": rng.getstate(),
                "rngs": rngs, "world": strategy.world, **weights}
        write_state_file(blob, path / STATE_FILE)
        for old in path.iterdir():
            if old.is_dir() and old.name != blob.get("shards"):
                shutil.rmtree(old, ignore_errors=True)
    strategy.barrier()


def load_state(path: Path, strategy, model, opt, sched, rng, fp: str, log) -> TrainState:
    """Restore the state in ``path`` if one was written for this fine-tune (settings,
    data, starting weights, one process or sharded: ``fp``) and loads safely; otherwise a
    fresh TrainState, after the main process discards what is there. Every process of the
    run calls it; a sharded state is read by any number of processes (DCP re-shards)."""
    path = Path(path)
    file = path / STATE_FILE
    reason, blob = None, None
    if file.exists():
        try:
            blob = read_state_file(file, strategy.map_location)
            usable = blob["fingerprint"] == fp and strategy.has_weights(path, blob)
        except Exception as e:  # an unreadable or unsafe state must not block the job
            reason = f"discarding unreadable resume state {file}: {e}"
        else:
            if not usable:
                reason = f"discarding resume state {file}: written for {strategy.other_runs}"
    strategy.barrier()  # every process has read state.pt before the main one may remove it
    if blob is None or reason:
        if reason:
            log(reason)
            if strategy.is_main:
                shutil.rmtree(path, ignore_errors=True)
        strategy.barrier()
        return TrainState()
    strategy.load_weights(path, blob, model, opt)
    sched.load_state_dict(blob["scheduler"])
    version, internal, gauss = blob["python_rng"]
    rng.setstate((version, tuple(internal), gauss))
    if strategy.rank < len(blob["rngs"]):  # a rank that existed then: its own RNG streams
        set_rng_state(blob["rngs"][strategy.rank])
    state = TrainState(**blob["train"])
    log(f"resumed from {file} at step {state.step}{strategy.resumed_note(blob)}")
    return state


def write_state_file(blob: dict, file: Path) -> None:
    """``torch.save`` to a temporary name, fsync, rename: a killed job never leaves a
    half-written state file."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(file, write)


def read_state_file(file: Path, map_location="cpu") -> dict:
    """The contents of a state file, loaded as data only (``weights_only``: no object
    other than tensors and plain values is built, no code runs); raises when the file
    holds anything else or is not a state of this layout."""
    import torch

    if torch.__version__ < (2, 6):  # weights_only loading could still run code before 2.6
        raise RuntimeError(f"torch {torch.__version__} cannot load it safely (needs 2.6+)")
    blob = torch.load(file, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"not a resume state of this version (layout {FORMAT})")
    return blob


def rng_state(cuda_devices) -> dict:
    """This process's torch RNG states: the CPU's and those of ``cuda_devices``."""
    import torch

    return {"torch": torch.get_rng_state(),
            "cuda": {i: torch.cuda.get_rng_state(i) for i in cuda_devices}}


def set_rng_state(saved: dict) -> None:
    """Restore what `rng_state` returned (CUDA devices that are not visible now: skipped)."""
    import torch

    torch.set_rng_state(saved["torch"].cpu())
    if torch.cuda.is_available():
        for i, state in saved["cuda"].items():
            if i < torch.cuda.device_count():
                torch.cuda.set_rng_state(state.cpu(), i)

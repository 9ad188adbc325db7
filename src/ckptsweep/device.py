"""Where a job computes: the device and the CPU threads it was granted."""

from __future__ import annotations


def resolve_device(name: str) -> str:
    """``auto`` is ``cuda`` where a GPU is visible, else ``cpu``; other names as given
    (``cpu``, ``cuda``, ``cuda:1``...)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads to what the scheduler granted: same numbers on re-run,
    and no oversubscription when several jobs share a machine."""
    import torch

    torch.set_num_threads(max(1, threads))

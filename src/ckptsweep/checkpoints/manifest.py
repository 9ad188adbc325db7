"""The checkpoint manifest: which weights each pre-training step loads.

A checkpoint manifest ``resources/checkpoints/{model}.tsv`` maps each pre-training step to
where its weights live (a local path, or a hub repo pinned to a commit). Everything
downstream loads through `ckptsweep.checkpoints.load.load`, so a tiny local OLMo and
OLMo-1B take the same path.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST_COLUMNS = ("step", "tokens", "revision", "source", "ref", "trust_remote_code")
"""Columns of a manifest; files with only the first four (older runs) still read."""


@dataclass(frozen=True)
class Checkpoint:
    """One row of a checkpoint manifest."""

    step: str
    """Pre-training step label as used in file names (e.g. "1000" or "main")."""
    tokens: int
    """Pre-training tokens seen at this step."""
    revision: str
    """Hub commit sha the step is pinned to, or "local" for a directory."""
    source: str
    """A local directory, or a hub repo id."""
    ref: str = ""
    """Hub branch the commit was resolved from (informative; loading uses ``revision``)."""
    trust_remote_code: bool = False
    """Whether the model block allows the repo's own code (off unless turned on)."""


def read_manifest(path: str | Path) -> dict[str, Checkpoint]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or tuple(rows[0]) not in (MANIFEST_COLUMNS, MANIFEST_COLUMNS[:4]):
        raise ValueError(f"{path}: not a checkpoint manifest (expected columns {MANIFEST_COLUMNS})")
    return {r["step"]: Checkpoint(r["step"], int(r["tokens"]), r["revision"], r["source"],
                                  r.get("ref") or "", r.get("trust_remote_code") == "true")
            for r in rows}


def write_manifest(path: str | Path, checkpoints: list[Checkpoint]) -> None:
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for c in checkpoints:
            w.writerow([c.step, c.tokens, c.revision, c.source, c.ref,
                        str(c.trust_remote_code).lower()])
    os.replace(tmp, path)


def checkpoint(manifest: str | Path, step: str) -> Checkpoint:
    table = read_manifest(manifest)
    if str(step) not in table:
        raise KeyError(f"{manifest}: no step {step!r}; it has {sorted(table)}")
    return table[str(step)]


def pretrained_checkpoints(folder: str | Path, steps) -> list[Checkpoint]:
    """The manifest rows of a local pre-training's saved steps (``{folder}/step{N}``)."""
    import json

    rows = []
    for step in steps:
        path = Path(folder) / f"step{step}"
        info_file = path / "pretrain_info.json"
        if not info_file.exists():
            raise FileNotFoundError(f"no checkpoint for step {step} in {folder}")
        info = json.loads(info_file.read_text())
        rows.append(Checkpoint(str(step), info["tokens"], "local", str(path.resolve())))
    return rows

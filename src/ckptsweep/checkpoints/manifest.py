"""The checkpoint manifest: which weights each pre-training step loads.

A checkpoint manifest maps pre-training steps to where their weights live (a local path,
or a hub repo pinned to a commit); the workflow writes one per checkpoint,
``resources/checkpoints/{model}/{step}.tsv``, so a job depends on its own checkpoint only
and adding a step to a study re-runs nothing that was finished. Everything downstream
loads through `ckptsweep.checkpoints.load.load`, so a tiny local OLMo and OLMo-1B take the
same path.

Local paths are written relative to the project root (the workflow's working directory),
so a copied or moved project reads its own weights. Older manifests hold absolute paths:
one under the current root is read as its relative path; any other absolute path is
refused, naming it, rather than reading another checkout's weights.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ckptsweep.files import atomic_write

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


def read_manifest(path: str | Path, root: str | Path | None = None) -> dict[str, Checkpoint]:
    """Step -> checkpoint of a manifest; local sources as paths relative to ``root`` (the
    project root; default the working directory)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or tuple(rows[0]) not in (MANIFEST_COLUMNS, MANIFEST_COLUMNS[:4]):
        raise ValueError(f"{path}: not a checkpoint manifest (expected columns {MANIFEST_COLUMNS})")
    return {r["step"]: Checkpoint(r["step"], int(r["tokens"]), r["revision"],
                                  _local(r["source"], path, root) if r["revision"] == "local"
                                  else r["source"],
                                  r.get("ref") or "", r.get("trust_remote_code") == "true")
            for r in rows}


def _local(source: str, manifest: str | Path, root: str | Path | None) -> str:
    """A local source as a path relative to the project root."""
    path = Path(source)
    if not path.is_absolute():
        return source
    here = Path(root or os.getcwd()).resolve()
    try:
        return str(path.resolve().relative_to(here))
    except ValueError:
        raise ValueError(f"{manifest}: checkpoint {source} lies outside this project "
                         f"({here}): a copied or moved project must not read another "
                         "checkout's weights; re-run its checkpoints job (delete the "
                         "manifest) to point it at this project's own") from None


def write_manifest(path: str | Path, checkpoints: list[Checkpoint]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(MANIFEST_COLUMNS)
            for c in checkpoints:
                w.writerow([c.step, c.tokens, c.revision, c.source, c.ref,
                            str(c.trust_remote_code).lower()])

    atomic_write(path, write)


def read_manifests(paths) -> dict[str, Checkpoint]:
    """Step -> checkpoint over several manifests (one per checkpoint, in the workflow)."""
    out: dict[str, Checkpoint] = {}
    for path in paths:
        out.update(read_manifest(path))
    return out


def checkpoint(manifest: str | Path, step: str) -> Checkpoint:
    table = read_manifest(manifest)
    if str(step) not in table:
        raise KeyError(f"{manifest}: no step {step!r}; it has {sorted(table)}")
    return table[str(step)]


def pretrained_checkpoints(folder: str | Path, steps) -> list[Checkpoint]:
    """The manifest rows of a local pre-training's saved steps (``{folder}/step{N}``), with
    the path as given (relative to the project root in the workflow)."""
    import json

    rows = []
    for step in steps:
        path = Path(folder) / f"step{step}"
        info_file = path / "pretrain_info.json"
        if not info_file.exists():
            raise FileNotFoundError(f"no checkpoint for step {step} in {folder}")
        info = json.loads(info_file.read_text())
        rows.append(Checkpoint(str(step), info["tokens"], "local", str(path)))
    return rows


def tokens_by_step(manifests) -> dict[tuple[str, str], int]:
    """(model, step) -> pre-training tokens, from per-step manifests
    (``resources/checkpoints/{model}/{step}.tsv``): what the aggregation scripts attach to
    each run."""
    out = {}
    for path in manifests:
        model = Path(path).parent.name
        out.update({(model, c.step): c.tokens for c in read_manifest(path).values()})
    return out

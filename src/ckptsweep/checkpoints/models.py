"""Loading checkpoints: local directories (the embedded default) and hub revisions alike.

A checkpoint manifest ``resources/checkpoints/{model}.tsv`` maps each pre-training step to
where its weights live (a local path, or a hub repo pinned to a commit). Everything
downstream loads through `load`, so a tiny local OLMo and OLMo-1B take the same path.

Hub manifests are written by `resolve_hub` (the ``checkpoints`` job, on the submitting
node): each requested step is looked up in the repo's branch list
(``huggingface_hub.list_repo_refs``) by `ckptsweep.revisions.resolve` and pinned to the
branch's commit; the branch name is kept in the ``ref`` column for the record.
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


def load(source: str | Path, revision: str | None = None, dtype: str = "float32",
         device: str = "cpu", trust_remote_code: bool = False, meta: bool = False):
    """(model, tokenizer) from a directory or a hub repo at a pinned revision.

    ``meta``: the model's architecture only, on PyTorch's meta device (no memory, no
    weights): the ranks but the first of a sharded fine-tune, which receive their shards
    of the first rank's weights (`distributed.fill_from_rank0`) instead of each holding a
    full copy in host memory (32 GB for Llama-3-8B in fp32)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ckptsweep.data.snapshots import require_cached_model

    rev = None if revision in (None, "", "local") else revision
    require_cached_model(str(source), rev)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=rev,
                                              trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:  # decoder-only hub tokenizers often lack one
        tokenizer.pad_token = tokenizer.eos_token
    if meta:
        config = AutoConfig.from_pretrained(source, revision=rev,
                                            trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
        return model.eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=rev, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tokenizer


def load_checkpoint(manifest: str | Path, step: str, **kw):
    c = checkpoint(manifest, step)
    kw.setdefault("trust_remote_code", c.trust_remote_code)
    return load(c.source, c.revision, **kw)


def resolve_hub(spec: dict, list_refs=None, log=print) -> list[Checkpoint]:
    """Manifest rows of a ``source: hub`` model block: every step pinned to a commit.

    ``list_refs(repo)`` returns the repo's branches (default:
    ``huggingface_hub.list_repo_refs(repo).branches``); tests pass a function. Tokens come
    from the branch name, else ``tokens_per_step`` x step, else 0 (logged)."""
    from ckptsweep.checkpoints.revisions import DEFAULT_PATTERN, resolve

    if list_refs is None:
        from huggingface_hub import list_repo_refs

        def list_refs(repo):
            return list_repo_refs(repo).branches

    repos = {str(k): v for k, v in (spec.get("repos") or {}).items()}
    needed = {repos.get(str(s), spec.get("repo")) for s in spec["steps"]}
    branches = {repo: list(list_refs(repo)) for repo in sorted(r for r in needed if r)}
    resolved = resolve(branches, spec["steps"], spec.get("repo"), spec.get("refs"),
                       spec.get("repos"), spec.get("branch_pattern") or DEFAULT_PATTERN)
    rows = []
    for r in resolved:
        tokens = r.tokens
        if tokens is None and spec.get("tokens_per_step"):
            tokens = r.step * int(spec["tokens_per_step"])
        if tokens is None:
            log(f"step {r.step}: no token count in {r.branch!r} and no tokens_per_step: 0")
            tokens = 0
        log(f"step {r.step}: {r.repo}@{r.branch} -> {r.commit}")
        rows.append(Checkpoint(str(r.step), tokens, r.commit, r.repo, r.branch,
                               bool(spec.get("trust_remote_code", False))))
    return rows


def save(model, tokenizer, path: Path, files: dict[str, dict]) -> None:
    """``save_pretrained`` model and tokenizer plus JSON ``files`` (name -> content) into
    ``path``, written to a temporary sibling and renamed, so a killed job never leaves a
    directory that looks like a finished model."""
    import json
    import shutil

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)

"""A hub model's checkpoints: the manifest rows pinned to commits, and their files in the
local cache. With the dataset snapshots (`ckptsweep.data.snapshots`), the only code that
touches the hub; compute jobs run offline and read only what the prefetch rules fetched.

Hub manifests are written by `resolve_hub` (the ``checkpoints`` job, on the submitting
node): each requested step is looked up in the repo's branch list
(``huggingface_hub.list_repo_refs``) by `ckptsweep.checkpoints.revisions.resolve` and pinned
to the branch's commit; the branch name is kept in the ``ref`` column for the record.

`prefetch_model` (the ``prefetch_model`` rule, on the submitting node) downloads every
pinned commit of a manifest into ``HF_HOME``; ``resources/prefetch/{model}.json`` records
what was fetched. `require_cached_model` turns a missing one into an error that says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from ckptsweep.checkpoints.manifest import Checkpoint
from ckptsweep.data.snapshots import MissingSnapshot

MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "tokenizer*"]
"""What a checkpoint needs to load: configs, weights, tokenizer. Not the duplicate
``*.bin`` / ``original/*.pth`` weights some repos also carry (Llama-3-8B: 16 GB more)."""


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


def prefetch_model(rows: list, trust_remote_code: bool = False) -> list[dict]:
    """Download every (repo, commit) of a manifest into ``HF_HOME``; return what was
    fetched. Weights in safetensors are preferred; ``*.bin`` only when a revision has no
    safetensors; Python files only for a model block with ``trust_remote_code``."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi()
    fetched = []
    for c in rows:
        files = api.list_repo_files(c.source, revision=c.revision)
        patterns = list(MODEL_FILES)
        if not any(f.endswith(".safetensors") for f in files):
            patterns.append("*.bin")
        if trust_remote_code:
            patterns.append("*.py")
        path = snapshot_download(c.source, revision=c.revision, allow_patterns=patterns)
        fetched.append({"step": c.step, "repo": c.source, "commit": c.revision,
                        "path": str(path)})
    return fetched


def require_cached_model(source: str, revision: str | None) -> None:
    """Raise `MissingSnapshot` if a hub model is not in the local cache while offline.

    Checked before ``from_pretrained`` so the error says what to prefetch instead of a
    connection error deep inside transformers."""
    if Path(source).exists() or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("", "0",
                                                                                  "false"):
        return
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(source, "config.json", revision=revision)
    if not isinstance(found, str):
        raise MissingSnapshot(
            f"model {source} at revision {revision} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); compute jobs run offline (HF_HUB_OFFLINE=1). "
            "Prefetch it on a node with hub access, with the same HF_HOME: snakemake "
            "--configfile <your config> resources/prefetch/<model>.json (rule prefetch_model)")

"""Resolve requested pre-training steps to hub branches pinned to commits: a pure function.

Model families publish their intermediate checkpoints in two ways:

- **branches of one repo** (OLMo, OLMo-2, Pythia, DataDecide): every checkpoint is a branch
  whose name *contains* the step, but the rest of the name differs between families and even
  between two repos of the same model: ``allenai/OLMo-1B`` names step 738000
  ``step738000-tokens3095B`` and ``allenai/OLMo-1B-hf`` names it ``step738000-tokens3094B``;
  OLMo-2 prefixes a stage (``stage1-step1000-tokens5B``), Pythia has no token count
  (``step1000``), DataDecide appends a seed (``step1000-seed-default``).
- **one repo per checkpoint** (TinyLlama ``TinyLlama-1.1B-intermediate-step-480k-1T``):
  each checkpoint is the ``main`` branch of its own repo.

So revision names are never computed from a step. The branch list (the shape that
``huggingface_hub.list_repo_refs(repo).branches`` returns: ``name`` and ``target_commit``)
is *parsed* with a per-family pattern, and each requested step is looked up in it. A step
that is not there fails, naming the nearest steps that are. The result pins every
checkpoint to a commit sha, so a branch that moves later cannot change a finished study.

Nothing here touches the network: ``ckptsweep checkpoints`` fetches the branch lists (in a
job, never while Snakemake parses the workflow) and hands them to `resolve`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_PATTERN = (r"^(?:stage\d+-)?step(?P<step>\d+)"
                   r"(?:-tokens(?P<tokens>\d+(?:\.\d+)?)(?P<unit>[KMBT])?)?$")
"""Branch names of the OLMo / OLMo-2 stage-1 / Pythia shape: ``step1000``,
``step1000-tokens4B``, ``stage1-step1000-tokens5B``. Families with other names (DataDecide's
``step1000-seed-default``, OLMo-2's ``stage2-ingredient1-...``) set ``branch_pattern``."""

UNITS = {None: 1, "": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Branch:
    """One parsed branch: the step it holds and, when the name says, the tokens seen."""

    name: str
    commit: str
    step: int
    tokens: int | None


@dataclass(frozen=True)
class Resolved:
    """A requested step pinned to a commit."""

    step: int
    repo: str
    branch: str
    commit: str
    tokens: int | None
    """Tokens seen, from the branch name (rounded as the name rounds them), else None."""


class RevisionError(LookupError):
    """A requested step has no branch (the message names the nearest ones)."""


def _field(ref, key: str) -> str:
    return ref[key] if isinstance(ref, Mapping) else getattr(ref, key)


def parse_branches(refs: Iterable, pattern: str = DEFAULT_PATTERN) -> dict[int, Branch]:
    """Step -> branch for every branch whose name matches ``pattern`` (named group ``step``;
    optional ``tokens`` and ``unit``). ``refs`` are ``GitRefInfo``-like objects or dicts
    with ``name`` and ``target_commit``. Two matching branches for one step are an error:
    the pattern is too loose for that repo."""
    regex = re.compile(pattern)
    out: dict[int, Branch] = {}
    for ref in refs:
        name = _field(ref, "name")
        m = regex.match(name)
        if not m:
            continue
        groups = m.groupdict()
        step = int(groups["step"])
        tokens = None
        if groups.get("tokens") is not None:
            tokens = round(float(groups["tokens"]) * UNITS[groups.get("unit")])
        branch = Branch(name, _field(ref, "target_commit"), step, tokens)
        if step in out:
            raise RevisionError(f"branches {out[step].name!r} and {name!r} both match step "
                                f"{step}; narrow the model's branch_pattern")
        out[step] = branch
    return out


def nearest(available: Iterable[int], step: int, k: int = 2) -> list[int]:
    """The available steps closest to ``step`` (the one below and the one above first)."""
    steps = sorted(set(available))
    below = [s for s in steps if s < step][-k:]
    above = [s for s in steps if s > step][:k]
    return sorted(below + above, key=lambda s: (abs(s - step), s))[:k]


def _named(refs: Iterable, name: str):
    for ref in refs:
        if _field(ref, "name") == name:
            return ref
    return None


def resolve(refs_by_repo: Mapping[str, Iterable], steps: Iterable[int], repo: str | None = None,
            refs: Mapping | None = None, repos: Mapping | None = None,
            pattern: str = DEFAULT_PATTERN) -> list[Resolved]:
    """Pin every requested step to a (repo, branch, commit).

    ``refs_by_repo``: repo id -> its branch list. ``repo``: the repo whose branches are the
    checkpoints. ``refs``: step -> an explicit branch name for that step (the final
    checkpoint as ``main``, a family whose names the pattern cannot parse). ``repos``: step
    -> a repo of its own (repo-per-checkpoint families), resolved at its ``main`` branch
    unless ``refs`` names another. Steps come back in the order given.
    """
    refs_by_repo = {k: list(v) for k, v in refs_by_repo.items()}
    refs = {int(k): v for k, v in (refs or {}).items()}
    repos = {int(k): v for k, v in (repos or {}).items()}
    parsed: dict[str, dict[int, Branch]] = {}
    out = []
    for step in steps:
        step = int(step)
        where = repos.get(step, repo)
        if where is None:
            raise RevisionError(f"step {step}: no repo (set the model's repo, or repos.{step})")
        if where not in refs_by_repo:
            raise RevisionError(f"step {step}: no branch list for {where!r}")
        branches = refs_by_repo[where]
        name = refs.get(step, "main" if step in repos else None)
        if name is not None:
            ref = _named(branches, name)
            if ref is None:
                have = sorted(_field(r, "name") for r in branches)
                raise RevisionError(f"{where} has no branch {name!r} (named for step {step}); "
                                    f"it has {have[:8]}{' ...' if len(have) > 8 else ''}")
            # Tokens from a same-step branch of the usual shape when there is one.
            same = _parsed(parsed, where, branches, pattern).get(step)
            out.append(Resolved(step, where, name, _field(ref, "target_commit"),
                                same.tokens if same else None))
            continue
        table = _parsed(parsed, where, branches, pattern)
        if step not in table:
            near = nearest(table, step)
            hint = ", ".join(f"{table[s].name} (step {s})" for s in near) or "none"
            raise RevisionError(f"{where} has no checkpoint branch for step {step}; "
                                f"nearest: {hint}. Name an existing step in the config "
                                "(revision names are never computed).")
        b = table[step]
        out.append(Resolved(step, where, b.name, b.commit, b.tokens))
    return out


def _parsed(cache: dict, repo: str, branches: Iterable, pattern: str) -> dict[int, Branch]:
    if repo not in cache:
        cache[repo] = parse_branches(branches, pattern)
    return cache[repo]

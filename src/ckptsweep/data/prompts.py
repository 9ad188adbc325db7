"""Prompts: one place that turns a canonical record into model text.

Fine-tuning and evaluation both call these functions, so the training format and the
evaluation's "default" format cannot drift apart.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from ckptsweep.data.tasks import TaskType, gold_text


def render(task: TaskType, record: dict, fmt: str) -> str:
    """The prompt of one record in one format (no demonstrations, no answer)."""
    return task.template(fmt).format(**record)


def target(task: TaskType, record: dict) -> str:
    """The completion the model should produce: a space, then the gold answer."""
    return " " + gold_text(task, record)


def demonstration(task: TaskType, record: dict, fmt: str) -> str:
    return render(task, record, fmt) + target(task, record)


def sample_demos(pool: list[dict], k: int, seed: int, example_id: str) -> list[dict]:
    """k demonstrations from the training pool, seeded per example so that a prompt does
    not depend on which other examples are evaluated in the same job."""
    if k <= 0:
        return []
    if k > len(pool):
        raise ValueError(f"{k} demonstrations asked for but the training pool has {len(pool)}")
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).sample(pool, k)


@dataclass(frozen=True)
class Prompt:
    text: str
    """The full prompt: demonstrations, separator, then the record's prompt."""
    demo_ids: tuple[str, ...]
    """Ids of the demonstrations that were kept (recorded, never scored)."""
    truncated: bool
    """True if demonstrations were dropped or the input was cut to fit the context."""


def build_prompt(task: TaskType, record: dict, fmt: str, demos: list[dict], separator: str,
                 count_tokens, budget: int) -> Prompt:
    """Few-shot prompt that fits in ``budget`` tokens (``count_tokens(text) -> int``).

    Demonstrations are dropped first (the last ones first); if the bare prompt is still too
    long, the longest input field is cut from its end, word by word, until it fits.
    """
    demos = list(demos)
    truncated = False
    while True:
        parts = [demonstration(task, d, fmt) for d in demos]
        text = separator.join([*parts, render(task, record, fmt)])
        if count_tokens(text) <= budget:
            return Prompt(text, tuple(str(d["id"]) for d in demos), truncated)
        truncated = True
        if demos:
            demos.pop()
            continue
        break
    record = dict(record)
    field = max((f for f in task.fields if isinstance(record[f], str)),
                key=lambda f: len(record[f]))
    words = record[field].split(" ")
    lo, hi = 0, len(words)  # binary search on the number of words kept
    while lo < hi:
        mid = (lo + hi + 1) // 2
        record[field] = " ".join(words[:mid])
        if count_tokens(render(task, record, fmt)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    record[field] = " ".join(words[:lo])
    return Prompt(render(task, record, fmt), (), True)


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


CHAT_ROLES = {"user": "<|user|>\n", "assistant": "<|assistant|>\n", "system": "<|system|>\n"}
"""Tulu-v2's chat format (open-instruct), used for instruction tuning."""


def chat_segments(messages: list[dict], eos: str) -> list[tuple[str, bool]]:
    """(text, is_trained) segments of a chat: only assistant replies (and their EOS) carry
    loss, as in open-instruct. Written by hand because the loss mask needs the segment
    boundaries, which a rendered chat template string no longer has."""
    segments: list[tuple[str, bool]] = []
    for m in messages:
        role = m["role"]
        if role not in CHAT_ROLES:
            raise ValueError(f"unknown chat role {role!r}; expected one of {list(CHAT_ROLES)}")
        if role == "assistant":
            segments.append((CHAT_ROLES[role], False))
            segments.append((m["content"].strip() + eos, True))
            segments.append(("\n", False))
        else:
            segments.append((CHAT_ROLES[role] + m["content"].strip() + "\n", False))
    return segments

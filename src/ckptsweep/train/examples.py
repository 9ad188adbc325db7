"""Training examples: a record tokenised into (input_ids, labels) with the loss on the
completion only, and a micro-batch of them as padded rows (`collate`) or one packed row
(`pack`)."""

from __future__ import annotations

from ckptsweep.data.prompts import chat_segments, render, target
from ckptsweep.data.tasks import TaskType

IGNORE = -100
"""The label of a position that carries no loss (the prompt, padding)."""


def encode_example(task: TaskType, record: dict, tokenizer, fmt: str, max_length: int):
    """(input_ids, labels): prompt tokens carry IGNORE, completion tokens (and EOS) carry
    themselves. Prompt and completion are tokenised separately so that the boundary is
    exact, the same way evaluation scores a completion."""
    eos = tokenizer.eos_token
    if task.kind == "chat":
        ids, labels = [], []
        for text, trained in chat_segments(record["messages"], eos):
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if trained else [IGNORE] * len(piece)
        return ids[:max_length], labels[:max_length]
    # The prompt gets the tokenizer's own special tokens (a BOS, for tokenizers that add
    # one), exactly as evaluation tokenises prompts; the completion gets none.
    prompt = tokenizer(render(task, record, fmt))["input_ids"]
    answer = tokenizer(target(task, record), add_special_tokens=False)["input_ids"]
    answer = answer + [tokenizer.eos_token_id]
    prompt = prompt[max(0, len(prompt) + len(answer) - max_length):]
    return prompt + answer, [IGNORE] * len(prompt) + answer


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int):
    """(ids, labels, attention mask): one row per example, padded on the right."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids, labels, mask


def pack(batch: list[tuple[list[int], list[int]]]):
    """One row holding every example of ``batch`` back to back, no padding.

    transformers' DataCollatorWithFlattening concatenates, restarts the position ids at
    every example and masks the label of each example's first token (so no loss reaches
    across a boundary; unpadded, that token is never a target either). The model sees
    position ids with no attention mask and builds a block-diagonal causal mask from them
    (masking_utils.find_packed_sequence_indices: SDPA and eager), or uses variable-length
    kernels (flash attention), so no example attends to another.
    """
    from transformers import DataCollatorWithFlattening

    flat = DataCollatorWithFlattening(return_tensors="pt", separator_id=IGNORE)
    row = flat([{"input_ids": x, "labels": y} for x, y in batch])
    return row["input_ids"], row["labels"], row["position_ids"]

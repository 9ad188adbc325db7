"""Supervised fine-tuning with the loss on the completion only.

One readable loop (nanoGPT style) instead of transformers' Trainer: the jobs are tiny on
CPU, the Trainer import alone costs seconds per job, and the loss mask, schedule and
throughput accounting stay visible in one place.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .progress import Progress
from .prompts import chat_segments, render, target
from .tasks import TaskType

IGNORE = -100


@dataclass
class FinetuneConfig:
    """One fine-tune: the release's protocol, with every knob a config key."""

    lr: float = 2e-6
    """Peak learning rate (paper: 2e-6 for SFT and Tulu, 2e-7 for XSum)."""
    epochs: float = 3
    """Passes over the training examples (paper: 3 for SFT, 5 for Tulu)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size × grad_accum)."""
    warmup: float = 0.03
    """Linear warm-up as a fraction of the optimizer steps."""
    weight_decay: float = 0.0
    """AdamW weight decay (the release used none)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    max_length: int = 512
    """Examples are cut to this many tokens (prompt first, from the left)."""
    seed: int = 0
    """Sets the example order."""
    format: str = "default"
    """Prompt format of the training examples."""


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


def completion_loss(model, ids, labels, mask):
    """Summed next-token cross-entropy over the positions that carry a label.

    The output layer runs only on those positions: with completion-only loss most
    positions are prompt, and the vocabulary projection (50k wide for OLMo) is the largest
    single matrix product of the model, so skipping it for the prompt saves compute and
    the memory of the full logits. Valid for models whose logits are the plain output
    projection of the last hidden state (OLMo, Llama, Pythia; not logit-softcapping ones).
    """
    import torch

    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")


def finetune(model, tokenizer, task: TaskType, records: list[dict], cfg: FinetuneConfig,
             out_dir: Path, log=print) -> dict:
    """Fine-tune ``model`` in place on ``records``; save it to ``out_dir``; return stats."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    log = log or (lambda _: None)
    examples = [encode_example(task, r, tokenizer, cfg.format, cfg.max_length) for r in records]
    if not examples:
        raise ValueError("no training examples")
    per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.grad_accum))
    total = math.ceil(per_epoch * cfg.epochs)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup * total), total)
    progress = Progress(total, "finetune", log)
    model.train()
    step, tokens, losses, t0 = 0, 0, [], time.perf_counter()
    while step < total:
        order = list(range(len(examples)))
        rng.shuffle(order)
        micro = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        for k in range(0, len(micro), cfg.grad_accum):
            group = micro[k:k + cfg.grad_accum]
            # Normalise by the completion tokens of the whole optimizer step, so that
            # accumulation gives the same gradient as one big batch.
            n_target = sum(sum(y != IGNORE for y in examples[i][1]) for mb in group for i in mb)
            step_loss = 0.0
            for mb in group:
                ids, labels, mask = collate([examples[i] for i in mb], tokenizer.pad_token_id)
                loss = completion_loss(model, ids, labels, mask) / n_target
                loss.backward()
                step_loss += loss.item()
                tokens += int(mask.sum())
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"fine-tuning loss is {step_loss} at step {step + 1}; "
                                         "no model was written")
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(step_loss)
            step += 1
            progress.update(step, loss=step_loss, lr=sched.get_last_lr()[0])
            if step >= total:
                break
    seconds = time.perf_counter() - t0
    stats = {"steps": total, "examples": len(examples), "tokens": tokens, "seconds": seconds,
             "tokens_per_s": tokens / seconds, "first_loss": losses[0],
             "final_loss": sum(losses[-20:]) / len(losses[-20:])}
    log(f"fine-tuned {total} steps in {seconds:.1f}s ({stats['tokens_per_s']:.0f} tokens/s), "
        f"loss {stats['first_loss']:.3f} -> {stats['final_loss']:.3f}")
    save(model, tokenizer, out_dir, {"config": asdict(cfg), "stats": stats, "losses": losses})
    return stats


def save(model, tokenizer, out_dir: Path, info: dict) -> None:
    """Write next to the target and rename, so a killed job never leaves a directory that
    looks like a finished model."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "finetune.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)

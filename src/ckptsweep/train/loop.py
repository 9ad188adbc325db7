"""Supervised fine-tuning with the loss on the completion only: the loop.

One readable loop (nanoGPT style) instead of transformers' Trainer. Not for speed: on CPU
the two run the same fine-tune at about the same speed and to the same mean loss (to 4
digits) (`bench/train_throughput.py --mode e2e --engine trainer`; tiny OLMo, 250 steps of
8 x 128-256 tokens: 20.2-21.0 s here, 21.3-24.9 s through the Trainer), and the Trainer's
import costs 0.3 s more; on a GPU, not measured yet. For control that the
protocol needs and the Trainer leaves to callbacks: a save at the next step boundary on
SIGTERM or shortly before Slurm's time limit, taken by every rank at the same step, with
a bit-identical resume from it (`ckptsweep.train.state`); and no dependency on accelerate.
The loss mask, schedule and throughput accounting stay visible in one place.

Several GPUs: the same loop, launched once per GPU by torchrun (``gpus`` > 1: the CLI
re-launches itself), with the model sharded over the processes (FSDP2, ZeRO-3-like) and
each optimizer step's examples split between them; the update is the one-process update
of the same global batch. What differs from one process sits behind the run's strategy
(`ckptsweep.train.strategy`: `Local` or `Sharded`), so the loop reads the same for both;
`ckptsweep.train.distributed` says why FSDP2 rather than DeepSpeed.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from ckptsweep.data.tasks import TaskType
from ckptsweep.progress import Progress
from ckptsweep.train.config import FinetuneConfig
from ckptsweep.train.distributed import shares
from ckptsweep.train.examples import IGNORE, collate, encode_example, pack
from ckptsweep.train.loss import LossLog, to_device
from ckptsweep.train.state import TrainState, load_state, save_state
from ckptsweep.train.stopping import Interrupted, sigterm_flag, slurm_deadline
from ckptsweep.train.strategy import for_this_process
from ckptsweep.train.throughput import throughput


def finetune(model, tokenizer, task: TaskType, records: list[dict], cfg: FinetuneConfig,
             out_dir: Path | None, log=print, resume_dir: Path | None = None) -> dict:
    """Fine-tune ``model`` in place on ``records``; save it to ``out_dir`` (None: do not
    save it); return stats.

    With ``resume_dir`` (outside the job's outputs: a scheduler deletes those when a job
    fails) the state is saved there every ``cfg.save_every`` steps and on SIGTERM, resumed
    from when present, and removed once the model is saved. SIGTERM raises Interrupted.
    """
    examples = [encode_example(task, r, tokenizer, cfg.format, cfg.max_length) for r in records]
    return train(model, tokenizer, examples, cfg, out_dir, log, resume_dir)


def train(model, tokenizer, examples: list[tuple[list[int], list[int]]], cfg: FinetuneConfig,
          out_dir: Path | None, log=print, resume_dir: Path | None = None) -> dict:
    """The loop of `finetune`, on encoded (input_ids, labels) examples.

    Launched by torchrun (as several processes, one per GPU), the same loop trains data
    parallel: the model is sharded (`strategy.Sharded`), each rank computes its share of
    every optimizer step, and only rank 0 logs and writes the model."""
    strategy = for_this_process(cfg.device)
    try:
        return _train(model, tokenizer, examples, cfg, out_dir,
                      log if strategy.is_main else None, resume_dir, strategy)
    finally:
        strategy.close()


def make_optimizer(model, cfg: FinetuneConfig, device: str):
    import torch

    # Fused AdamW (one kernel for all parameters) on CUDA; the default (foreach) on CPU.
    fused = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             **fused)


def train_step(step, body, examples, group, cfg, pad_id, device, autocast, rank=0, world=1):
    """Forward and backward over one optimizer step's examples, in micro-batches of
    ``cfg.batch_size``; returns (summed loss tensor, non-pad tokens). ``step`` computes a
    micro-batch's loss (what the strategy's ``prepare`` returned); over ``world``
    processes, this ``rank`` computes its share of the examples."""
    import torch

    # Normalise by the completion tokens of the whole optimizer step, of every rank (each
    # rank sees the whole group), so that accumulation, and the sum of the ranks'
    # gradients, give the same gradient as one big batch in one process.
    n_target = sum(sum(y != IGNORE for y in examples[i][1]) for i in group)
    step_loss, tokens = torch.zeros((), device=device), 0
    for micro in shares(group, cfg.batch_size, rank, world):
        # A rank whose share ran out computes one example at weight 0: a sharded model's
        # forward and backward are collective, every rank must run as many.
        weight = 1.0 if micro else 0.0
        batch = [examples[i] for i in micro or group[:1]]
        # The labels stay on the CPU: completion_loss picks the labelled positions there.
        if cfg.packing:
            (ids, labels, pos), mask = pack(batch), None
        else:
            (ids, labels, mask), pos = collate(batch, pad_id), None
        if micro:  # non-pad tokens, counted on the CPU
            tokens += ids.numel() if mask is None else int(mask.sum())
        ids, mask, pos = (None if t is None else to_device(t, device) for t in (ids, mask, pos))
        with autocast:
            loss = step(ids, labels, mask, pos, body, weight, n_target)
        loss.backward()
        step_loss += loss.detach()
    return step_loss, tokens


def _train(model, tokenizer, examples, cfg, out_dir, log, resume_dir, strategy) -> dict:
    import torch
    from transformers import get_linear_schedule_with_warmup

    log = log or (lambda _: None)
    if not examples:
        raise ValueError("no training examples")
    device = strategy.device
    if model.config._attn_implementation != cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    eff = cfg.effective_batch
    per_epoch = math.ceil(len(examples) / eff)
    total = math.ceil(per_epoch * cfg.epochs)
    fp = strategy.fingerprint(cfg, examples, model)  # the starting weights: before prepare
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    step = strategy.prepare(model, cfg)
    opt = make_optimizer(model, cfg, device)  # after sharding: over this rank's shards
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup * total), total)
    state = TrainState()
    if resume_dir is not None:
        state = load_state(Path(resume_dir), strategy, model, opt, sched, rng, fp, log)
    # On CUDA the matrix products run in bf16 while the weights, their gradients and the
    # AdamW moments stay fp32 ("master weights"): the paper's updates are ~lr = 2e-6 of a
    # weight, below bf16's resolution (8 mantissa bits, ~4e-3 relative), so updates
    # applied to bf16 weights would mostly round away to nothing.
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                else nullcontext())
    # Compile the transformer body only: the loss gathers the labelled positions, a
    # data-dependent shape. Lengths vary per batch: the first recompile makes them dynamic.
    body = torch.compile(model.base_model) if cfg.compile else model.base_model
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    progress = Progress(total, "finetune", log)
    losses = LossLog(state.losses)
    model.train()
    first_step, first_tokens, t0 = state.step, state.tokens, time.perf_counter()
    deadline = slurm_deadline(cfg.stop_margin, log)
    if deadline is not None:
        log(f"Slurm job: saving and stopping at {time.ctime(deadline)} "
            f"({cfg.stop_margin:.0f} s before its time limit) if not done by then")
    with sigterm_flag() as stop:
        while state.step < total:
            if state.order is None:
                state.order = list(range(len(examples)))
                rng.shuffle(state.order)
                state.pos = 0
            steps = [state.order[i:i + eff] for i in range(0, len(state.order), eff)]
            while state.pos < len(steps) and state.step < total:
                loss, tokens = train_step(step, body, examples, steps[state.pos], cfg,
                                          tokenizer.pad_token_id, device, autocast,
                                          strategy.rank, strategy.world)
                if deadline is not None and time.time() >= deadline:
                    stop.set()  # the time limit is near: stop as on SIGTERM
                # Every rank: the step's loss, tokens, and decisions.
                loss, tokens, stopping, read = strategy.reduce(loss, tokens, stop.is_set(),
                                                          progress.due(state.step + 1))
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                losses.add(loss)
                state.tokens += tokens
                state.step += 1
                state.pos += 1
                saving = state.step < total and (stopping or (
                    cfg.save_every and state.step % cfg.save_every == 0))
                if not (read or saving or state.step == total):
                    progress.update(state.step)
                    continue
                # The losses so far, checked: a non-finite one stops here, before any write.
                progress.update(state.step, loss=losses.read()[-1], lr=sched.get_last_lr()[0])
                if saving:
                    if resume_dir is not None:
                        save_state(Path(resume_dir), strategy, state, model, opt, sched, rng, fp)
                    if stopping:
                        where = (f"state saved to {resume_dir}; a re-run resumes from it"
                                 if resume_dir is not None else "no resume dir: no state saved")
                        why = ("the job's time limit is near" if deadline is not None
                               and time.time() >= deadline else "SIGTERM")
                        raise Interrupted(f"{why}: stopped after step {state.step} of "
                                          f"{total}; {where}")
            state.order = None
            state.epoch += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    losses = losses.read()
    stats = {"steps": total, "examples": len(examples), "tokens": state.tokens,
             "seconds": seconds, "resumed_at_step": first_step, "first_loss": losses[0],
             "final_loss": sum(losses[-20:]) / len(losses[-20:])}
    speed = throughput(model, state.tokens - first_tokens, seconds, device, strategy.world)
    stats["tokens_per_s"] = speed["tokens_per_s"]
    ran = (f"{total} steps" if not first_step else f"steps {first_step + 1}..{total} of "
           f"{total} (resumed at step {first_step}: this attempt ran {total - first_step})")
    log(f"fine-tuned {ran} in {seconds:.1f}s, loss {stats['first_loss']:.3f} -> "
        f"{stats['final_loss']:.3f}; throughput {json.dumps(speed)}")
    files = {"finetune.json": {"config": asdict(cfg), "stats": stats, "losses": losses},
             "throughput.json": speed}
    if out_dir is not None:  # None: kept in memory only (the advisor's proxy fine-tunes)
        strategy.save_model(model, tokenizer, out_dir, files)
    if resume_dir is not None and strategy.is_main:
        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: nothing to resume
    return stats

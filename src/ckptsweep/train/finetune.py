"""Supervised fine-tuning with the loss on the completion only.

One readable loop (nanoGPT style) instead of transformers' Trainer. Not for speed: on CPU
the two run the same fine-tune at about the same speed and to the same mean loss (to 4
digits) (`bench/train_throughput.py --mode e2e --engine trainer`; tiny OLMo, 250 steps of
8 x 128-256 tokens: 20.2-21.0 s here, 21.3-24.9 s through the Trainer), and the Trainer's
import costs 0.3 s more; on a GPU, not measured yet. For control that the
protocol needs and the Trainer leaves to callbacks: a save at the next step boundary on
SIGTERM or shortly before Slurm's time limit, taken by every rank at the same step, with
a bit-identical resume from it; and no dependency on accelerate. The loss mask, schedule and
throughput accounting stay visible in one place.

Resumable: with a ``resume_dir`` the loop writes its whole state (weights, AdamW moments,
schedule, RNG states, the epoch's example order and position, the losses so far) every
``save_every`` optimizer steps and when SIGTERM arrives (Slurm's warning before a time-out
or pre-emption), and a re-run picks up from it and ends with the same weights, bit for bit
on CPU with the same threads, as a run that was never stopped. The state records its
position in optimizer steps, and an optimizer step always covers the same examples
whatever the micro-batch, so a state written by attempt 1 stays valid for an OOM retry
that halves the micro-batch (the weights then agree within float tolerance, not bit for
bit: the summation order changes). A state written for other settings or other data is
discarded with a log line.

Several GPUs: the same loop, launched once per GPU by torchrun (``gpus`` > 1: the CLI
re-launches itself), with the model sharded over the processes (FSDP2, ZeRO-3-like) and
each optimizer step's examples split between them; the update is the one-process update
of the same global batch. `ckptsweep.distributed` holds what differs, and why FSDP2 rather
than DeepSpeed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ckptsweep.checkpoints.models import save
from ckptsweep.data.prompts import chat_segments, render, target
from ckptsweep.data.tasks import TaskType
from ckptsweep.device import resolve_device
from ckptsweep.progress import Progress
from ckptsweep.train import distributed
from ckptsweep.train.distributed import Labels, shares

IGNORE = -100
STATE_FILE = "state.pt"

# Settings that change how a step is computed but not what it computes: a resume state
# written under other values of these is still valid.
RUNTIME_ONLY = ("batch_size", "grad_accum", "save_every", "device", "attn_implementation",
                "compile", "packing", "gpus", "sharding", "stop_margin")

# Dense bf16 tensor-core peak per GPU, for MFU (first match of the device name wins).
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
              ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


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
    save_every: int = 200
    """Optimizer steps between resumable states (0: only on SIGTERM)."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1"..."""
    attn_implementation: str = "sdpa"
    """transformers attention kernel: "sdpa", "eager", "flash_attention_2"..."""
    compile: bool = False
    """torch.compile the transformer body (GPU: faster steps after a compile of ~1 min)."""
    packing: bool = False
    """Concatenate each micro-batch into one row, no padding; attention stays per example."""
    gpus: int = 1
    """Processes (GPUs) of the fine-tune: above 1, `ckptsweep finetune` re-launches itself
    under torchrun and the model is sharded over them (see `ckptsweep.distributed`). The
    effective batch stays the job's: each process takes its share of every optimizer
    step's examples, in micro-batches of at most ``batch_size``."""
    stop_margin: float = 300.0
    """Inside a Slurm job, seconds before the job's time limit at which training saves its
    state and stops (exit 143), as on SIGTERM. The loop watches the clock itself because
    Slurm's warning signal goes to the job step's top process, which under
    proctrack/cgroup is Snakemake's job runner, not this one."""
    sharding: str = "zero3"
    """With ``gpus`` > 1: "zero3" (weights, gradients and AdamW state all sharded) or
    "zero2" (a layer's gathered weights kept from forward to backward: more memory, less
    communication)."""

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def for_attempt(self, attempt: int) -> FinetuneConfig:
        """The settings of Snakemake attempt ``attempt``: each retry (after an OOM, say)
        halves the micro-batch and doubles accumulation, so the effective batch, and with
        it the optimizer steps, stay the same. Stops halving at an odd micro-batch."""
        cfg = self
        for _ in range(max(0, attempt - 1)):
            if cfg.batch_size % 2:
                break
            cfg = replace(cfg, batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2)
        return cfg


class Interrupted(RuntimeError):
    """SIGTERM arrived; the state was saved at the step boundary and the job must exit
    non-zero, so that the scheduler re-runs it (and the re-run resumes)."""


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


def completion_loss(model, ids, labels, mask=None, position_ids=None, body=None):
    """Summed next-token cross-entropy over the positions that carry a label.

    The output layer runs only on those positions: with completion-only loss most
    positions are prompt, and the vocabulary projection (50k wide for OLMo) is the largest
    single matrix product of the model, so skipping it for the prompt saves compute and
    the memory of the full logits. Valid for models whose logits are the plain output
    projection of the last hidden state (OLMo, Llama, Pythia; not logit-softcapping ones).
    ``body`` is the transformer without its head (a compiled one, say); packed rows come
    with ``position_ids`` and no ``mask``.
    """
    import torch

    body = body if body is not None else model.base_model
    # Which positions carry a label is read from ``labels`` where they live: kept on the
    # CPU (the training loop does so), the GPU is not stalled mid-step by a mask lookup;
    # and sent before the forward is queued, so the host does not wait for it either.
    targets = labels[:, 1:]
    index = (targets != IGNORE).flatten().nonzero().squeeze(1)
    wanted = to_device(targets.flatten()[index], ids.device)
    index = to_device(index, ids.device)
    # No KV cache in training: it costs memory, and with one transformers would not
    # detect packed rows from the position ids.
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state
    picked = hidden[:, :-1].flatten(0, 1).index_select(0, index)
    logits = model.get_output_embeddings()(picked)
    return torch.nn.functional.cross_entropy(logits.float(), wanted, reduction="sum")


def to_device(tensor, device):
    """``tensor`` (on the CPU) on ``device``, without making the host wait for the GPU.

    A plain copy to a GPU from ordinary memory synchronises: the host waits until the GPU
    has run everything queued before it, so the host can never run ahead and queue the
    next kernels while the GPU computes. From page-locked (pinned) memory the copy is
    queued like a kernel; torch's pinned-memory cache keeps the source alive until the
    copy has run."""
    device = str(device)
    if device.startswith("cuda") and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class LossLog:
    """Every optimizer step's loss, read back from the GPU only when needed.

    Reading a GPU value (``.item()``) makes the host wait for the GPU; read once a step,
    the host could never queue the next step while the GPU finishes this one, and the GPU
    would idle for the host's share of every step. So the losses stay on the device until
    `read` (a progress line, a state save, a stop, the end), which fetches them at once and
    fails on the first non-finite one, naming its step. Nothing is written before a read,
    so a NaN still never reaches a saved model or state; the steps taken after it until
    the read (at most a progress interval) are lost work, not wrong results."""

    def __init__(self, values: list[float]):
        self.values = values
        """Losses read so far, one per optimizer step from the first (the state's list)."""
        self.pending: list = []

    def add(self, loss) -> None:
        self.pending.append(loss.detach())

    def read(self) -> list[float]:
        if self.pending:
            import torch

            fetched = torch.stack([t.double() for t in self.pending]).tolist()
            self.pending.clear()
            for value in fetched:
                if not math.isfinite(value):
                    raise FloatingPointError(f"fine-tuning loss is {value} at step "
                                             f"{len(self.values) + 1}; no model was written")
                self.values.append(value)
        return self.values


@dataclass
class TrainState:
    """Where the loop is: everything beyond the model, optimizer and RNGs that a resumed
    run needs to continue exactly."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    order: list[int] | None = None
    """This epoch's example order (None: not drawn yet)."""
    pos: int = 0
    """Optimizer steps done within this epoch."""
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    """Non-pad tokens trained on so far."""


def fingerprint(cfg: FinetuneConfig, examples, model) -> str:
    """What a resume state must have been written for: the settings that change the result
    (the effective batch, not its split), the encoded examples, and the starting weights
    (a cheap sample of them, taken before the first step)."""
    h = hashlib.sha256()
    settings = {k: v for k, v in asdict(cfg).items() if k not in RUNTIME_ONLY}
    h.update(json.dumps({**settings, "effective_batch": cfg.effective_batch},
                        sort_keys=True).encode())
    h.update(json.dumps(examples).encode())
    params = list(model.parameters())
    for p in (params[0], params[-1]):
        h.update(p.detach().flatten()[:65536].float().cpu().numpy().tobytes())
    return h.hexdigest()


def save_state(path: Path, state: TrainState, model, opt, sched, rng, fp: str) -> None:
    """Write the resumable state atomically: a killed write leaves the previous state."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    blob = {"fingerprint": fp, "train": asdict(state), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    distributed.write_state_file(blob, path / STATE_FILE)


def load_state(path: Path, model, opt, sched, rng, fp: str, device: str, log) -> TrainState:
    """Restore the state in ``path`` if there is one written for this fine-tune; otherwise
    start afresh (discarding a state written for something else)."""
    import torch

    file = path / STATE_FILE
    if not file.exists():
        return TrainState()
    try:
        blob = torch.load(file, map_location=device, weights_only=False)
    except Exception as e:  # an unreadable state must not block the job
        log(f"discarding unreadable resume state {file}: {e}")
        shutil.rmtree(path, ignore_errors=True)
        return TrainState()
    if blob["fingerprint"] != fp:
        log(f"discarding resume state {file}: written for other settings, data or "
            "starting weights")
        shutil.rmtree(path, ignore_errors=True)
        return TrainState()
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    rng.setstate(blob["python_rng"])
    torch.set_rng_state(blob["torch_rng"].cpu())
    if blob["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in blob["cuda_rng"]])
    state = TrainState(**blob["train"])
    log(f"resumed from {file} at step {state.step}")
    return state


@contextmanager
def sigterm_flag():
    """An Event set by SIGTERM while the loop runs. The handler only sets the flag: the
    loop saves at the next step boundary, where the state is consistent."""
    stop = threading.Event()
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    except ValueError:  # not the main thread (a test runner's worker): no handler
        previous = None
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def slurm_deadline(margin: float, log=print) -> float | None:
    """``time.time()`` at which a Slurm job should save and stop: its end time (Slurm's
    ``SLURM_JOB_END_TIME``, else ``squeue``'s) minus ``margin``; None outside Slurm or
    without a known end time."""
    import subprocess
    from datetime import datetime

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME")
    if end and end.isdigit():
        return int(end) - margin
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
        return datetime.fromisoformat(out).timestamp() - margin  # Slurm's local time
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        log(f"Slurm job {job}: no end time ({err!r}); relying on SIGTERM and save_every")
        return None


def make_optimizer(model, cfg: FinetuneConfig, device: str):
    import torch

    # Fused AdamW (one kernel for all parameters) on CUDA; the default (foreach) on CPU.
    fused = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             **fused)


def train_step(model, body, examples, group, cfg, pad_id, device, autocast, ctx=None):
    """Forward and backward over one optimizer step's examples, in micro-batches of
    ``cfg.batch_size``; returns (summed loss tensor, non-pad tokens). With a distributed
    ``ctx``, over this rank's share of them (``model`` is then the sharded step module)."""
    import torch

    # Normalise by the completion tokens of the whole optimizer step, of every rank (each
    # rank sees the whole group), so that accumulation, and the sum of the ranks'
    # gradients, give the same gradient as one big batch in one process.
    n_target = sum(sum(y != IGNORE for y in examples[i][1]) for i in group)
    step_loss, tokens = torch.zeros((), device=device), 0
    rank, world = (ctx.rank, ctx.world) if ctx is not None else (0, 1)
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
            if ctx is None:
                loss = completion_loss(model, ids, labels, mask, pos, body) / n_target
            else:
                loss = model(ids, mask, pos, labels=Labels(labels), body=body) * (weight
                                                                                  / n_target)
        loss.backward()
        step_loss += loss.detach()
    return step_loss, tokens


def finetune(model, tokenizer, task: TaskType, records: list[dict], cfg: FinetuneConfig,
             out_dir: Path, log=print, resume_dir: Path | None = None) -> dict:
    """Fine-tune ``model`` in place on ``records``; save it to ``out_dir``; return stats.

    With ``resume_dir`` (outside the job's outputs: a scheduler deletes those when a job
    fails) the state is saved there every ``cfg.save_every`` steps and on SIGTERM, resumed
    from when present, and removed once the model is saved. SIGTERM raises Interrupted.
    """
    examples = [encode_example(task, r, tokenizer, cfg.format, cfg.max_length) for r in records]
    return train(model, tokenizer, examples, cfg, out_dir, log, resume_dir)


def train(model, tokenizer, examples: list[tuple[list[int], list[int]]], cfg: FinetuneConfig,
          out_dir: Path, log=print, resume_dir: Path | None = None) -> dict:
    """The loop of `finetune`, on encoded (input_ids, labels) examples.

    Launched by torchrun (as several processes, one per GPU), the same loop trains data
    parallel: the model is sharded (`distributed.shard`), each rank computes its share of
    every optimizer step, and only rank 0 logs and writes the model."""
    if not distributed.launched():
        return _train(model, tokenizer, examples, cfg, out_dir, log, resume_dir, None)
    ctx = distributed.Context.start(cfg.device)
    try:
        return _train(model, tokenizer, examples, cfg, out_dir,
                      log if ctx.rank == 0 else None, resume_dir, ctx)
    finally:
        ctx.close()


def _train(model, tokenizer, examples, cfg, out_dir, log, resume_dir, ctx) -> dict:
    import torch
    from transformers import get_linear_schedule_with_warmup

    log = log or (lambda _: None)
    if not examples:
        raise ValueError("no training examples")
    device = resolve_device(cfg.device) if ctx is None else ctx.device
    if ctx is None:
        model.to(device)
    # Sharded, the model stays where it was loaded (rank 0: host memory; the others: the
    # meta device): `fully_shard` moves each unit's shard to the device itself, so no GPU
    # ever holds the whole model beside its shard, and `fill_from_rank0` fills the rest.
    if model.config._attn_implementation != cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    eff = cfg.effective_batch
    per_epoch = math.ceil(len(examples) / eff)
    total = math.ceil(per_epoch * cfg.epochs)
    if ctx is None:
        fp = fingerprint(cfg, examples, model)
    else:
        # The first rank's weights are the starting weights (the others may hold none
        # yet). A sharded state is not a one-process one: distinct fingerprints.
        fp = ctx.broadcast_object(
            hashlib.sha256((fingerprint(cfg, examples, model) + "|sharded").encode())
            .hexdigest() if ctx.rank == 0 else None)
        full = model.state_dict() if ctx.rank == 0 else {}
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    # ``step`` computes a micro-batch's loss: the model itself, or its sharded wrapper.
    step = None if ctx is None else distributed.shard(model, completion_loss, cfg.sharding,
                                                      device, ctx.world)
    if ctx is not None:
        distributed.fill_from_rank0(model, full, device)
        del full  # the first rank's full copy: its own shard is all it keeps
    opt = make_optimizer(model, cfg, device)  # after sharding: over this rank's shards
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup * total), total)
    state = TrainState()
    if resume_dir is not None and ctx is None:
        state = load_state(Path(resume_dir), model, opt, sched, rng, fp, device, log)
    elif resume_dir is not None:
        state = distributed.load_state(ctx, Path(resume_dir), model, opt, sched, rng, fp, log,
                                       TrainState)
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
                loss, tokens = train_step(model if ctx is None else step, body, examples,
                                          steps[state.pos], cfg, tokenizer.pad_token_id,
                                          device, autocast, ctx)
                if deadline is not None and time.time() >= deadline:
                    stop.set()  # the time limit is near: stop as on SIGTERM
                stopping, read = stop.is_set(), progress.due(state.step + 1)
                if ctx is not None:  # every rank: the step's loss, tokens, and decisions
                    loss = ctx.sum_loss(loss)
                    tokens, stopping, read = ctx.agree(tokens, stopping, read)
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
                    if resume_dir is not None and ctx is None:
                        save_state(Path(resume_dir), state, model, opt, sched, rng, fp)
                    elif resume_dir is not None:
                        distributed.save_state(ctx, Path(resume_dir), state, model, opt,
                                               sched, rng, fp)
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
    run = throughput(model, state.tokens - first_tokens, seconds, device,
                     1 if ctx is None else ctx.world)
    stats["tokens_per_s"] = run["tokens_per_s"]
    log(f"fine-tuned {total} steps in {seconds:.1f}s, loss {stats['first_loss']:.3f} -> "
        f"{stats['final_loss']:.3f}; throughput {json.dumps(run)}")
    files = {"finetune.json": {"config": asdict(cfg), "stats": stats, "losses": losses},
             "throughput.json": run}
    if ctx is None:
        save(model, tokenizer, out_dir, files)
    else:  # gathered on rank 0 (every rank takes part), written by it alone
        full = distributed.full_state_dict(model)
        if ctx.rank == 0:
            save(distributed.Gathered(model, full), tokenizer, out_dir, files)
        ctx.barrier()
    if resume_dir is not None and (ctx is None or ctx.rank == 0):
        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: nothing to resume
    return stats


def flop_params(model) -> int:
    """Parameters that cost 6 FLOPs per token in training: all but the input embedding
    table, which is a lookup (unless it is tied to the output head, which is a product).
    Counted for every token, though the head runs on completion tokens only: MFU is a
    model-FLOPs figure, the convention of the PaLM paper."""
    n = sum(p.numel() for p in model.parameters())  # tied tensors are listed once
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return n if emb is head else n - emb.numel()


def peak_flops(device: str) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None when unknown, CPUs included)."""
    import torch

    if not device.startswith("cuda"):
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_FLOPS if key in name), None)


def throughput(model, tokens: int, seconds: float, device: str, processes: int = 1) -> dict:
    """Tokens/s, MFU (6 × parameters × non-pad tokens / time / peak) and peak memory (of
    this process). Over ``processes`` GPUs the peak is theirs together."""
    import resource

    import torch

    name, peak = peak_flops(device)
    peak = peak * processes if peak else peak
    achieved = 6 * flop_params(model) * tokens / max(seconds, 1e-9)
    if device.startswith("cuda"):
        memory, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:  # Linux reports the peak resident set in KiB
        memory, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max_rss"
    return {"device": name, "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
            "flop_params": flop_params(model), "tflops_per_s": round(achieved / 1e12, 3),
            "peak_tflops_per_s": peak / 1e12 if peak else None,
            "mfu": round(achieved / peak, 4) if peak else None,
            "peak_memory_gib": round(memory / 2**30, 3), "memory": kind,
            **({"processes": processes} if processes > 1 else {})}

"""Training throughput of the fine-tuning loop, against the hardware's floor.

Two modes, on a randomly initialised OLMo (no download):

- ``steps``: times optimizer steps of `ckptsweep.train.loop.train_step` (the loop's own
  step: forward, backward, clip, fused AdamW) on one batch shape, warm-up excluded: the
  mean over a block of steps run back to back, as the loop runs them (no per-step
  read-back); prints step time, tokens/s, MFU, peak memory and the per-step floor:
  6·N·tokens / peak FLOP/s (compute) + the optimizer's memory traffic / HBM bandwidth.
  ``--sync-debug`` counts the calls that make the host wait for the GPU (by source line),
  ``--profile`` prints the busiest operators and the fraction of time the GPU computes.
- ``e2e``: an MNLI-size fine-tune end to end (6,000 synthetic examples of 128-256 tokens
  whose last 3 tokens are the completion, 3 epochs, batch 8): load from disk + train +
  save, timed, through `ckptsweep.train.loop.train` or (``--engine trainer``) the same
  fine-tune through transformers' Trainer, the yardstick for our loop.

    PYTHONPATH=src python3 bench/train_throughput.py --preset tiny            # CPU
    PYTHONPATH=src python3 bench/train_throughput.py --preset olmo1b --mode both
    PYTHONPATH=src python3 bench/train_throughput.py --preset olmo1b --min-len 128 \
        --completion 3 --packing --compile --sync-debug --profile

Imports: torch, transformers and the package only, so it runs on a bare GPU machine
(``--engine trainer`` also needs accelerate).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import warnings
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from ckptsweep.device import resolve_device
from ckptsweep.train.config import FinetuneConfig
from ckptsweep.train.examples import IGNORE
from ckptsweep.train.loop import make_optimizer, train, train_step
from ckptsweep.train.strategy import Local
from ckptsweep.train.throughput import flop_params, peak_flops

PRESETS = {
    "tiny": {"arch": {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 512,
                      "num_hidden_layers": 2, "num_attention_heads": 4},
             "batch": 8, "seq": 256, "examples": 600, "epochs": 1},
    "olmo1b": {"arch": {"vocab_size": 50304, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 16, "num_attention_heads": 16},
               "batch": 8, "seq": 256, "examples": 6000, "epochs": 3},
}
# HBM bandwidth (bytes/s) for the optimizer's share of the floor.
HBM = (("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12), ("A100", 2.0e12))
# Fused AdamW per parameter and step: reads the fp32 weight, gradient and both moments
# (16 B) and writes weight and moments (12 B). Clipping (read + scale the gradient) and
# autocast's per-forward bf16 copy of the weights add ~14 B more, not counted here.
ADAMW_BYTES = 28
PROFILED = 3  # --profile: steps profiled after the timed ones


def build(arch: dict, device: str):
    torch.manual_seed(0)
    conf = OlmoConfig(**arch, num_key_value_heads=arch["num_attention_heads"],
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      pad_token_id=0, eos_token_id=1, bos_token_id=None)
    with torch.device(device):  # initialise in place: minutes faster than on CPU for 1B
        return OlmoForCausalLM(conf)


def tokenizer():
    """A two-word tokenizer: the loop needs a pad id and something to save."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def synthetic(n: int, vocab: int, lo: int, hi: int, completion: int, seed: int = 0):
    """(input_ids, labels) of ``n`` examples of ``lo``-``hi`` tokens; the last
    ``completion`` tokens carry the loss (0: every token does)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(2, vocab) for _ in range(rng.randint(lo, hi))]
        k = completion or len(ids)
        out.append((ids, [IGNORE] * (len(ids) - k) + ids[-k:]))
    return out


def floor_seconds(params: int, tokens: int, device: str) -> dict:
    name, peak = peak_flops(device)
    bw = next((b for key, b in HBM if key in name), None)
    if peak is None or bw is None:
        return {"floor_s": None}
    compute, optim = 6 * params * tokens / peak, ADAMW_BYTES * params / bw
    return {"floor_compute_s": compute, "floor_optimizer_s": optim, "floor_s": compute + optim}


def bench_steps(args, preset, device):
    model = build(preset["arch"], device)
    cfg = FinetuneConfig(batch_size=args.batch, attn_implementation=args.attn,
                         packing=args.packing, compile=args.compile, device=device)
    if args.attn != model.config._attn_implementation:
        model.set_attn_implementation(args.attn)
    opt = make_optimizer(model, cfg, device)
    body = torch.compile(model.base_model) if args.compile else model.base_model
    micro_loss = Local(device).prepare(model, cfg)  # the one-process loop's loss
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    lo = args.min_len or args.seq
    n_steps = args.warmup + args.steps + (PROFILED if args.profile else 0)
    examples = synthetic(args.batch * n_steps, preset["arch"]["vocab_size"], lo, args.seq,
                         args.completion)
    model.train()

    def step(i):
        """One optimizer step as the loop takes it: no read-back (the loop reads the losses
        only for a progress line), so the host may run ahead of the GPU."""
        group = list(range(i * args.batch, (i + 1) * args.batch))
        _, n = train_step(micro_loss, body, examples, group, cfg, 0, device, autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return n

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for i in range(args.warmup):
        step(i)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    syncs = Counter()
    with warnings.catch_warnings(record=True) as caught:
        if args.sync_debug and cuda:  # a warning at every call that makes the host wait
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        t0 = time.perf_counter()
        tokens = [step(i) for i in range(args.warmup, args.warmup + args.steps)]
        sync()
        seconds = time.perf_counter() - t0
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
        syncs.update(f"{w.filename}:{w.lineno}" for w in caught
                     if "synchroniz" in str(w.message))
    params = flop_params(model)
    name, peak = peak_flops(device)
    step_s, per_step = seconds / args.steps, statistics.mean(tokens)
    achieved = 6 * params * per_step / step_s
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    result = {"mode": "steps", "device": name, "preset": args.preset, "batch": args.batch,
              "lengths": [lo, args.seq], "compile": args.compile, "packing": args.packing,
              "attn": args.attn, "flop_params": params, "tokens_per_step": per_step,
              "step_s": step_s, "tokens_per_s": per_step / step_s,
              "tflops_per_s": achieved / 1e12, "mfu": achieved / peak if peak else None,
              "peak_memory_gib": mem, **floor_seconds(params, per_step, device)}
    if args.sync_debug:
        result["host_syncs_per_step"] = sum(syncs.values()) / args.steps
        result["host_sync_sites"] = dict(syncs.most_common())
    if args.profile:
        result.update(profile(range(args.warmup + args.steps, n_steps), step, cuda))
    return result


def profile(steps: range, step, cuda: bool) -> dict:
    """Where ``steps`` spend their time (torch.profiler): the busiest operators, printed,
    and the fraction of the wall time the GPU computes (below 1: the host, not the GPU,
    sets the pace)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for i in steps:
            step(i)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    table = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(table.table(sort_by=key, row_limit=25), flush=True)
    out = {"profiled_step_s": wall / len(steps)}
    if cuda:  # the kernels' own rows (the ops that launched them repeat their time)
        busy = sum(e.self_device_time_total for e in table
                   if e.device_type == DeviceType.CUDA) / 1e6  # microseconds
        out["gpu_busy_fraction"] = busy / wall
    return out


def bench_e2e(args, preset, device):
    vocab = preset["arch"]["vocab_size"]
    examples = synthetic(args.examples or preset["examples"], vocab, args.seq // 2, args.seq,
                         args.completion or 3)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "ckpt"
        build(preset["arch"], device).save_pretrained(src)  # the checkpoint: not timed
        tokenizer().save_pretrained(src)
        t0 = time.perf_counter()
        model = OlmoForCausalLM.from_pretrained(src, dtype=torch.float32)
        tok = PreTrainedTokenizerFast.from_pretrained(src)
        t_load = time.perf_counter() - t0
        cfg = FinetuneConfig(lr=2e-6, epochs=args.epochs or preset["epochs"],
                             batch_size=args.batch, max_length=args.seq, save_every=0,
                             device=device, compile=args.compile, packing=args.packing,
                             attn_implementation=args.attn)
        if args.engine == "trainer":
            stats = trainer_finetune(model, examples, cfg, Path(tmp) / "out", device)
        else:
            stats = train(model, tok, examples, cfg, Path(tmp) / "out", log=print)
            losses = json.loads((Path(tmp) / "out" / "finetune.json").read_text())["losses"]
            stats["mean_loss"] = sum(losses) / len(losses)
        total = time.perf_counter() - t0
        run = json.loads((Path(tmp) / "out" / "throughput.json").read_text())
    return {"mode": "e2e", "engine": args.engine, "preset": args.preset,
            "examples": len(examples), "epochs": cfg.epochs, "steps": stats["steps"],
            "compile": args.compile, "packing": args.packing, "load_s": t_load,
            "train_s": stats["seconds"], "load_train_save_s": total,
            "save_s": total - t_load - stats["seconds"], "mean_loss": stats["mean_loss"],
            **run}


def trainer_finetune(model, examples, cfg, out: Path, device: str) -> dict:
    """The same fine-tune through transformers' Trainer, the yardstick the fine-tuning
    issue sets for our loop: the same loss (completion tokens only, the head run on those
    positions, normalised by the batch's completion tokens), linear schedule with warm-up,
    clipping, fused AdamW on CUDA, bf16 autocast over fp32 weights, optional compile.
    Padded batches only (the Trainer has no packing of its own here). Needs accelerate."""
    from transformers import Trainer, TrainingArguments

    from ckptsweep.train.distributed import Labels
    from ckptsweep.train.examples import collate
    from ckptsweep.train.loss import completion_loss
    from ckptsweep.train.throughput import throughput

    class CompletionTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["targets"].value  # a holder: the Trainer leaves it on the CPU
            n = int((labels[:, 1:] != IGNORE).sum())
            return completion_loss(model, inputs["input_ids"], labels,
                                   inputs["attention_mask"]) / n

    def batch(rows):
        ids, labels, mask = collate([(r["ids"], r["labels"]) for r in rows], 0)
        return {"input_ids": ids, "attention_mask": mask, "targets": Labels(labels)}

    cuda = device.startswith("cuda")
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs, learning_rate=cfg.lr, lr_scheduler_type="linear",
        warmup_steps=cfg.warmup, weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip,
        bf16=cuda, optim="adamw_torch_fused" if cuda else "adamw_torch",
        torch_compile=cfg.compile, use_cpu=not cuda, seed=cfg.seed, save_strategy="no",
        logging_steps=100, report_to=[], disable_tqdm=True, remove_unused_columns=False)
    data = [{"ids": x, "labels": y} for x, y in examples]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer = CompletionTrainer(model=model, args=args, train_dataset=data, data_collator=batch)
    result = trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(out))
    tokens = round(sum(len(x) for x, _ in examples) * cfg.epochs)
    run = throughput(model, tokens, seconds, device)
    (out / "throughput.json").write_text(json.dumps(run))
    return {"steps": result.global_step, "seconds": seconds,
            "mean_loss": result.training_loss}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--mode", choices=("steps", "e2e", "both"), default="steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, help="examples per step (default: the preset's)")
    p.add_argument("--seq", type=int, help="longest example (default: the preset's)")
    p.add_argument("--min-len", type=int, default=0,
                   help="steps mode: shortest example (default: all --seq long)")
    p.add_argument("--completion", type=int, default=0,
                   help="labelled tokens per example (steps default: all; e2e default: 3)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--examples", type=int, help="e2e: training examples")
    p.add_argument("--epochs", type=float, help="e2e: epochs")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--engine", choices=("ours", "trainer"), default="ours",
                   help="e2e: our loop, or the same fine-tune through transformers' Trainer "
                        "(needs accelerate)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--packing", action="store_true")
    p.add_argument("--sync-debug", action="store_true",
                   help="steps mode, CUDA: count the calls that make the host wait for the "
                        "GPU, by source line")
    p.add_argument("--profile", action="store_true",
                   help="steps mode: profile 3 more steps; print the busiest operators and "
                        "the GPU's busy fraction")
    p.add_argument("--json", help="append each result as a JSON line to this file")
    args = p.parse_args()
    if args.engine == "trainer" and args.packing:  # it would run padded, labelled packed
        p.error("--engine trainer has no packing here: drop --packing")
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset["batch"]
    args.seq = args.seq or preset["seq"]
    device = resolve_device(args.device)
    modes = ("steps", "e2e") if args.mode == "both" else (args.mode,)
    for mode in modes:
        result = (bench_steps if mode == "steps" else bench_e2e)(args, preset, device)
        print(json.dumps(result), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

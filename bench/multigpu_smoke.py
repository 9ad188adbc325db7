"""Smoke run of sharded (multi-GPU) fine-tuning: the fine-tuning loop under torchrun with
the model sharded by FSDP2 (ZeRO-3-like, `ckptsweep.train.distributed`), against the plain
one-process loop, on a randomly initialised model (no download).

Four runs of `ckptsweep.train.loop.train` from the same saved starting weights and the same
synthetic examples (128-256 tokens, the last 3 the completion):

1. ``single``: one process, one device (the loop every one-GPU job runs);
2. ``sharded``: ``torchrun --standalone --nproc-per-node N``, N = ``--gpus`` (default:
   every visible GPU; on one H100 that is one process, which still runs the whole sharded
   path: NCCL, bf16 mixed precision over fp32 master shards, sharded checkpoint, gather
   on save);
3. ``stopped``: the same, sent SIGTERM (to torchrun, which forwards it) as soon as its
   first resumable state is written: every rank must stop at the same step and save;
4. ``resumed``: the same command again, resuming from that sharded state.

It prints each run's loss, tokens/s, MFU and peak memory, and checks that the sharded
run's first and final losses match the one-process run's (bf16 arithmetic in another
order, so not bit for bit; the weight updates are compared and reported too), that every
rank stopped at the same step on SIGTERM, and that the resumed run ends where the
uninterrupted sharded run did. Exit status 0 when every check passes.

    PYTHONPATH=src python bench/multigpu_smoke.py                         # GPU(s), OLMo-1B shape
    PYTHONPATH=src python bench/multigpu_smoke.py --preset llama8b --gpus 8   # a 4-8 GPU node
    PYTHONPATH=src python bench/multigpu_smoke.py --preset tiny --device cpu --gpus 2  # CPU, Gloo

Disk: the starting checkpoint, three finished models and one sharded state (16 bytes a
parameter): about 40 GB for the OLMo-1B shape. Imports: torch, transformers and the
package only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = {
    "tiny": {"kind": "olmo", "vocab_size": 2048, "hidden_size": 128,
             "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4},
    "olmo1b": {"kind": "olmo", "vocab_size": 50304, "hidden_size": 2048,
               "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 16},
    # Llama-3-8B's shape: 16 bytes a parameter of training state (~128 GB) needs 4-8 GPUs.
    "llama8b": {"kind": "llama", "vocab_size": 128256, "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8},
}


def build_checkpoint(preset: str, path: Path) -> None:
    """A random model of the preset's shape and a two-word tokenizer, saved (fp32)."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        OlmoConfig,
        OlmoForCausalLM,
        PreTrainedTokenizerFast,
    )

    arch = dict(PRESETS[preset])
    kind = arch.pop("kind")
    arch.setdefault("num_key_value_heads", arch["num_attention_heads"])
    common = {"max_position_embeddings": 4096, "pad_token_id": 0, "eos_token_id": 1,
              "bos_token_id": None}
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialise in place: much faster than on CPU for 1B+
        if kind == "olmo":
            model = OlmoForCausalLM(OlmoConfig(**arch, **common, tie_word_embeddings=True))
        else:
            model = LlamaForCausalLM(LlamaConfig(**arch, **common, tie_word_embeddings=False))
    model.save_pretrained(path)
    tok = Tokenizer(WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>"))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                            eos_token="<eos>").save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"checkpoint: {preset}, {n / 1e6:.0f}M parameters -> {path}", flush=True)


def examples(n: int, vocab: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(2, vocab) for _ in range(rng.randint(128, 256))]
        out.append((ids, [-100] * (len(ids) - 3) + ids[-3:]))
    return out


def worker(args) -> None:
    """One run of the loop (a torchrun worker, or the single process)."""
    import torch

    from ckptsweep.checkpoints.load import load
    from ckptsweep.train.config import FinetuneConfig
    from ckptsweep.train.loop import train
    from ckptsweep.train.stopping import Interrupted

    torch.set_num_threads(max(1, args.threads))
    # As `ckptsweep finetune` does: ranks but the first build the model on the meta device
    # and receive their shards of rank 0's weights.
    model, tok = load(args.ckpt, meta=int(os.environ.get("RANK", 0)) > 0)
    cfg = FinetuneConfig(lr=args.lr, epochs=1, batch_size=args.batch, warmup=0.1,
                         save_every=args.save_every, device=args.device, seed=0,
                         sharding=args.sharding, gpus=args.gpus)
    data = examples(args.examples, model.config.vocab_size)
    try:
        train(model, tok, data, cfg, Path(args.out),
              log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True),
              resume_dir=Path(args.resume) if args.resume else None)
    except Interrupted as e:
        print(f"error: {e}", flush=True)
        raise SystemExit(143) from None


def command(args, ckpt: Path, out: Path, resume: Path | None, sharded: bool) -> list[str]:
    me = [str(Path(__file__).resolve()), "--role", "worker", "--ckpt", str(ckpt),
          "--out", str(out), "--device", args.device, "--lr", str(args.lr),
          "--batch", str(args.batch), "--examples", str(args.examples),
          "--save-every", str(args.save_every), "--sharding", args.sharding,
          "--gpus", str(args.gpus), "--threads", str(args.threads)]
    if resume is not None:
        me += ["--resume", str(resume)]
    if not sharded:
        return [sys.executable, *me]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={args.gpus}", *me]


def run(cmd: list[str], name: str, stop_at: Path | None = None) -> tuple[int, str, float]:
    """Run ``cmd``; with ``stop_at``, SIGTERM it when that file appears."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    print(f"--- {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        if stop_at is not None:
            while not stop_at.exists() and proc.poll() is None:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=3600)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if not ln.startswith(("W1", "I1"))]
    print("\n".join(lines[-12:]), flush=True)
    return proc.returncode, out, seconds


def flat(path: Path):
    import torch
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    return torch.cat([sd[k].float().flatten() for k in sorted(sd)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", default="driver", choices=["driver", "worker"])
    p.add_argument("--preset", default="olmo1b", choices=sorted(PRESETS))
    p.add_argument("--gpus", type=int, default=0, help="processes (default: visible GPUs)")
    p.add_argument("--device", default="auto", help="auto (CUDA if visible), cuda, cpu")
    p.add_argument("--sharding", default="zero3", choices=["zero3", "zero2"])
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--save-every", type=int, default=0,
                   help="steps between states (default: a third of the steps)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", help="default: a temporary folder, removed at the end")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="largest relative difference of the sharded vs one-process losses")
    p.add_argument("--ckpt")
    p.add_argument("--out")
    p.add_argument("--resume")
    args = p.parse_args()
    if args.role == "worker":
        return worker(args)

    import torch

    if not args.gpus:
        args.gpus = max(1, torch.cuda.device_count())
    if not args.save_every:
        args.save_every = max(1, args.examples // args.batch // 3)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="multigpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s) "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}; "
          f"{args.gpus} process(es), {args.sharding}, preset {args.preset}; in {work}",
          flush=True)
    try:
        ckpt = work / "ckpt"
        build_checkpoint(args.preset, ckpt)
        start = flat(ckpt)
        report, ok = {"preset": args.preset, "processes": args.gpus,
                      "sharding": args.sharding}, True
        runs = [("single", False, None, None), ("sharded", True, None, None),
                ("stopped", True, work / "resume", work / "resume" / "state.pt"),
                ("resumed", True, work / "resume", None)]
        for name, sharded, resume, stop_at in runs:
            out = work / name
            rc, log, seconds = run(command(args, ckpt, out, resume, sharded), name, stop_at)
            entry = {"rc": rc, "wall_s": round(seconds, 1)}
            if name == "stopped":
                entry["stopped_ranks"] = log.count("SIGTERM: stopped after step")
                entry["state_written"] = (work / "resume" / "state.pt").exists()
                ok &= rc != 0 and entry["state_written"] and entry["stopped_ranks"] == args.gpus
            else:
                ok &= rc == 0
                if rc == 0:
                    info = json.loads((out / "finetune.json").read_text())["stats"]
                    entry.update({k: info[k] for k in ("first_loss", "final_loss",
                                                        "resumed_at_step")})
                    entry["throughput"] = json.loads((out / "throughput.json").read_text())
            report[name] = entry
            print(f"=== {name}: {json.dumps(entry)}", flush=True)
        if all(report[n]["rc"] == 0 for n in ("single", "sharded", "resumed")):
            # Losses: the same batches, so the same curve up to bf16 rounding. The update
            # (final minus start) is reported, not gated: AdamW turns rounding noise in
            # near-zero gradients into full-size steps, so in bf16 its relative difference
            # says little; in fp32 (CPU) it is ~1e-6.
            single, sharded = report["single"], report["sharded"]
            rel = {k: abs(sharded[k] - single[k]) / abs(single[k])
                   for k in ("first_loss", "final_loss")}
            d1, d2 = flat(work / "single") - start, flat(work / "sharded") - start
            report["loss_rel_diff_sharded_vs_single"] = rel
            report["update_rel_diff_sharded_vs_single"] = ((d2 - d1).norm() / d1.norm()).item()
            report["update_cosine_sharded_vs_single"] = torch.nn.functional.cosine_similarity(
                d1, d2, dim=0).item()
            resumed = (flat(work / "resumed") - flat(work / "sharded")).abs().max().item()
            report["max_abs_diff_resumed_vs_sharded"] = resumed
            ok &= max(rel.values()) <= args.tolerance and resumed <= 1e-3 and \
                report["resumed"]["resumed_at_step"] > 0
        report["ok"] = bool(ok)
        print("SUMMARY " + json.dumps(report), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

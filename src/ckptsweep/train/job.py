"""The fine-tuning job: one checkpoint fine-tuned on one training set, as a rule runs it.

Above one GPU the same command re-launches itself under torchrun (one process per GPU);
a Snakemake retry (after an out-of-memory failure, say) runs smaller micro-batches for
the same optimizer steps; SIGTERM or Slurm's time limit stops it at a step boundary with
its state saved, exit 143, so that a re-run resumes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ckptsweep.errors import build
from ckptsweep.progress import log as default_log
from ckptsweep.train.config import FinetuneConfig


def finetune_job(spec: dict, manifest: str, step: str, train: str, out: str,
                 resume_dir: str | None, attempt: int, compile_cache: str | None,
                 argv: list[str], log=default_log) -> None:
    from ckptsweep.checkpoints.load import load_checkpoint
    from ckptsweep.data.tasks import task_type
    from ckptsweep.files import read_jsonl
    from ckptsweep.train import distributed
    from ckptsweep.train.loop import finetune
    from ckptsweep.train.stopping import Interrupted

    spec = dict(spec)
    task = task_type(spec.pop("task"))
    cfg = build(FinetuneConfig, spec, "finetune")
    if cfg.gpus > 1 and not distributed.launched():
        # Several GPUs: this same command once per GPU under torchrun (does not return).
        distributed.check_devices(cfg.gpus, cfg.device)
        distributed.relaunch(cfg.gpus, argv, log)
    if resume_dir and distributed.is_first_process():
        log = _kept_log(Path(resume_dir), log)
    if attempt > 1:
        # A retry (after an out-of-memory failure, say): smaller micro-batches, same steps.
        cfg = cfg.for_attempt(attempt)
        log(f"attempt {attempt}: micro-batch {cfg.batch_size} x {cfg.grad_accum} "
            f"accumulated (effective batch {cfg.effective_batch}, unchanged)")
    if cfg.compile and compile_cache:
        # Compiled kernels are shared by every fine-tune of the same architecture.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(compile_cache).resolve()))
    # Sharded: only the first process reads the weights; the others get their shards.
    meta = distributed.launched() and int(os.environ["RANK"]) > 0
    model, tok = load_checkpoint(manifest, step, meta=meta)
    records = read_jsonl(train)
    log(f"fine-tuning step {step} on {len(records)} {task.name} examples: {cfg}")
    resume = Path(resume_dir) if resume_dir else None
    try:
        finetune(model, tok, task, records, cfg, Path(out), log=log, resume_dir=resume)
    except Interrupted as e:
        log(f"error: {e}")
        raise SystemExit(143) from None  # 128 + SIGTERM: stopped, not broken


def _kept_log(resume_dir: Path, log):
    """``log``, also kept beside the resumable state: Snakemake truncates a job's log when
    it runs the job again, so a resumed attempt first replays the interrupted attempts'
    lines, and its own follow. Removed with the state when the fine-tune finishes."""
    kept = resume_dir / "attempts.log"
    if kept.exists() and kept.stat().st_size:
        print(f"--- the earlier attempt(s) of this fine-tune, kept in {kept} ---\n"
              f"{kept.read_text().rstrip()}\n--- this attempt ---", flush=True)

    def both(msg: str) -> None:
        log(msg)
        resume_dir.mkdir(parents=True, exist_ok=True)
        with kept.open("a", encoding="utf-8") as f:
            f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")

    return both

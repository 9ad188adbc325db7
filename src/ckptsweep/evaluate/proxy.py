"""The proxy fine-tune: a cheap predictor of which pre-training checkpoint fine-tunes best
(the checkpoint advisor's, config ``advisor.proxy``; `ckptsweep.analysis.advisor_report`).

One job per checkpoint (``ckptsweep proxy``, the workflow's ``proxy`` rule). For each
proxied task of the model it takes the task's own fine-tune (the spec ``ckptsweep
finetune`` would get), holds a seeded dev slice of ``dev_size`` records out of the task's
training split, fine-tunes a fresh copy of the base checkpoint on a seeded
``data_fraction`` of the rest for ``steps_fraction`` of the full fine-tune's optimizer
steps (the same learning rate, batch and schedule shape; the model is never saved), and
scores the dev slice like an evaluation (`run.evaluate_model`, demonstrations drawn from
the training records outside the slice). The test set is never touched: its fine-tuned
scores are the truth the proxy is judged against.

Output: ``{out}/{variant}.parquet`` per task in the predictions schema (eval set
``{dataset}__dev``) and ``{out}/proxy.json`` (per task: examples, steps, seconds).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path

from ckptsweep.errors import ConfigError, build
from ckptsweep.evaluate.config import EvalSet, ProxyConfig
from ckptsweep.progress import log as default_log


def split(records: list[dict], cfg: ProxyConfig, dataset: str,
          need: int = 1) -> tuple[list[dict], list[dict]]:
    """(dev slice, proxy training records): a seeded dev slice of ``cfg.dev_size`` records
    (the same at every checkpoint), then a seeded ``data_fraction`` of the rest (at least
    one). ``need``: records the rest must hold (demonstrations of a few-shot prompt)."""
    if len(records) - cfg.dev_size < max(1, need):
        raise ConfigError("advisor.proxy.dev_size", f"{cfg.dev_size} of the {len(records)} "
                          f"training records of {dataset!r} leave fewer than {max(1, need)} "
                          "to train the proxy on and draw demonstrations from")
    order = list(range(len(records)))
    random.Random(f"{cfg.seed}:{dataset}").shuffle(order)
    dev = [records[i] for i in sorted(order[:cfg.dev_size])]
    rest = sorted(order[cfg.dev_size:])
    n = max(1, round(cfg.data_fraction * len(rest)))
    picked = sorted(random.Random(f"{cfg.seed}:{dataset}:train").sample(rest, n))
    return dev, [records[i] for i in picked]


def proxy_epochs(n_full: int, n_proxy: int, epochs: float, effective_batch: int,
                 steps_fraction: float) -> tuple[float, int, int]:
    """(epochs over the proxy's records, its optimizer steps, the full fine-tune's):
    ``steps_fraction`` of the full fine-tune's steps (at least one)."""
    full = math.ceil(math.ceil(n_full / effective_batch) * epochs)
    steps = max(1, round(steps_fraction * full))
    return steps / math.ceil(n_proxy / effective_batch), steps, full


def proxy_job(spec: dict, manifest: str, out: str | Path, batch_size: str | None = None,
              log=default_log) -> dict:
    """Every task's proxy of one checkpoint (see the module); returns ``proxy.json``."""
    from ckptsweep.checkpoints.load import load_checkpoint
    from ckptsweep.data.tasks import task_type
    from ckptsweep.evaluate.job import eval_config
    from ckptsweep.evaluate.run import evaluate_model
    from ckptsweep.evaluate.schema import write_predictions
    from ckptsweep.files import read_jsonl, staged_dir, write_jsonl
    from ckptsweep.train.config import FinetuneConfig
    from ckptsweep.train.loop import finetune

    block = dict(spec["proxy"])
    block["formats"] = tuple(block.get("formats", ProxyConfig.formats))
    cfg = build(ProxyConfig, block, "advisor.proxy")
    ev = eval_config(spec, cache_dir="", batch_size=batch_size)  # fresh models: no cache
    info = {"step": spec["step"], "tasks": {}}
    with staged_dir(out) as tmp:
        for t in spec["tasks"]:
            settings = dict(t["finetune"])
            task = task_type(settings.pop("task"))
            ft = build(FinetuneConfig, settings, "finetune")
            records = read_jsonl(t["train"])
            dev, train = split(records, cfg, t["dataset"], need=max(ev.shots, default=0))
            epochs, steps, full = proxy_epochs(len(records), len(train), ft.epochs,
                                               ft.effective_batch, cfg.steps_fraction)
            # One process, no resumable state, no save: a minute-scale job on a GPU.
            ft = replace(ft, epochs=epochs, gpus=1, save_every=0)
            dev_path = tmp / f".{t['dev_set']}.jsonl"
            write_jsonl(dev_path, dev)
            log(f"{t['variant']}: proxy of {len(train)} of {len(records)} training records "
                f"({len(dev)} held out as the dev slice), {steps} of the full fine-tune's "
                f"{full} steps")
            t0 = time.perf_counter()
            model, tok = load_checkpoint(manifest, spec["step"])
            stats = finetune(model, tok, task, train, ft, None, log=log)
            sets = [EvalSet(name=t["dev_set"], task=task.name, test_path=dev_path,
                            pool_path=t["train"], formats=cfg.formats)]
            df = evaluate_model(model, tok, sets, ev, progress=log)
            write_predictions(df, tmp / f"{t['variant']}.parquet")
            dev_path.unlink()
            seconds = time.perf_counter() - t0
            score = df.groupby(["format", "shots"])["score"].mean()
            log(f"{t['variant']}: dev score per format and shots:\n{score.to_string()}")
            info["tasks"][t["variant"]] = {
                "dataset": t["dataset"], "examples": len(train), "dev": len(dev),
                "steps": stats["steps"], "full_steps": full, "seconds": seconds,
                "final_loss": stats["final_loss"], "dev_score": float(df["score"].mean())}
            del model
        (tmp / "proxy.json").write_text(json.dumps(info, indent=1))
    return info


def cmd_proxy(args, spec) -> None:
    from ckptsweep.device import set_threads

    set_threads(args.threads)
    info = proxy_job(spec, args.manifest, args.out, batch_size=args.batch_size)
    log_line = ", ".join(f"{v}: {t['dev_score']:.3f}" for v, t in info["tasks"].items())
    default_log(f"step {info['step']}: proxy dev scores {log_line} -> {args.out}")


def register(verb) -> None:
    """Add ``ckptsweep proxy`` through the cli's ``verb(name, fn, help)``."""
    s = verb("proxy", cmd_proxy, "the checkpoint advisor's proxy fine-tunes of one "
             "checkpoint: each task on a fraction of its data and steps, scored on a dev "
             "slice held out of its training split")
    s.add_argument("--manifest", required=True, help="checkpoint manifest (the base model)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--batch-size", help="evaluation batch policy: auto, or examples per "
                   "forward (not part of the spec)")
    s.add_argument("--out", required=True, help="folder for {variant}.parquet and proxy.json")

"""Bits per byte of the reference under the base model: the checkpoint advisor's
continuous base metric for generation sets (``advisor.bpb``; the predictor
``neg_bits_per_byte`` of `ckptsweep.analysis.predictor_sources.bpb_values`).

A generation set's predictions keep no log-probabilities (greedy decoding), so one
base-only job per checkpoint (``ckptsweep bpb``, the workflow's ``bpb`` rule) scores the
gold text of every generation eval set the base model is evaluated on, in the
evaluation's own prompts: the same formats, shots, demonstrations (drawn per example with
``evaluation.seed``) and prompt building, the prompt cut to leave room for the whole
reference. bits per byte = -log2 p(reference | prompt) / UTF-8 bytes of the reference
(tokenizer-free, so comparable across checkpoints and models).

Output: one parquet row per example: model, step, eval_set, format, shots, id, metric
(``rouge_l``, the fine-tuned scores' metric it predicts), bits_per_byte.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

COLUMNS = ["model", "step", "eval_set", "format", "shots", "id", "metric", "bits_per_byte"]


def bits_per_byte(model, tokenizer, sets, cfg, progress=None):
    """Per-example rows (without model and step) for the generation ``sets`` (`EvalSet`):
    each reference scored after the prompt the evaluation builds for it (the same blocks,
    demonstrations and model preparation as `run.evaluate_model`)."""
    import pandas as pd
    import torch

    from ckptsweep.data.prompts import target
    from ckptsweep.data.tasks import gold_text
    from ckptsweep.evaluate.logprobs import continuation_logprobs
    from ckptsweep.evaluate.run import blocks, scoring_lm

    lm = scoring_lm(model, tokenizer, cfg)
    rows = []
    with torch.inference_mode():
        for es, task, fmt, shots, records, demos, started in blocks(sets, cfg):
            prompts, refs = [], []
            for record, demo in zip(records, demos, strict=True):
                ref = lm.continuation_ids(target(task, record))
                _, ids = lm.build(task, record, fmt, demo, max(1, lm.max_length - len(ref)))
                prompts.append(ids)
                refs.append([ref])
            lps = continuation_logprobs(lm.scoring_model, prompts, refs, lm.batching,
                                        lm.pad_id, cfg.prefix_sharing)
            for record, (lp,) in zip(records, lps, strict=True):
                gold = gold_text(task, record)
                rows.append({"eval_set": es.name, "format": fmt, "shots": shots,
                             "id": str(record["id"]), "metric": "rouge_l",
                             "bits_per_byte": -lp / math.log(2)
                             / max(len((" " + gold).encode()), 1)})
            if progress:
                progress(f"{es.name} {fmt} {shots}-shot: {len(records)} references "
                         f"in {time.perf_counter() - started:.1f} s")
    return pd.DataFrame(rows, columns=COLUMNS[2:])


def bpb_job(spec: dict, manifest: str, out: str | Path, batch_size: str | None = None,
            log=None) -> None:
    """``out`` (parquet): the base checkpoint's bits per byte on the spec's sets."""
    from ckptsweep.checkpoints.load import load_checkpoint
    from ckptsweep.evaluate.job import eval_config, eval_sets
    from ckptsweep.files import atomic_write
    from ckptsweep.progress import log as default_log

    log = log or default_log
    cfg = eval_config(spec, cache_dir="", batch_size=batch_size)
    model, tok = load_checkpoint(manifest, spec["step"])
    df = bits_per_byte(model, tok, eval_sets(spec["sets"]), cfg, progress=log)
    df.insert(0, "step", int(spec["step"]))
    df.insert(0, "model", spec["model"])
    atomic_write(out, lambda p: df.to_parquet(p, index=False))
    means = df.groupby(["eval_set", "format", "shots"])["bits_per_byte"].mean()
    log(f"step {spec['step']}: mean bits per byte of the references\n{means.to_string()}")


def cmd_bpb(args, spec) -> None:
    from ckptsweep.device import set_threads

    set_threads(args.threads)
    bpb_job(spec, args.manifest, args.out, batch_size=args.batch_size)


def register(verb) -> None:
    """Add ``ckptsweep bpb`` through the cli's ``verb(name, fn, help)``."""
    s = verb("bpb", cmd_bpb, "the base checkpoint's bits per byte of the reference on "
             "generation sets (the checkpoint advisor's predictor)")
    s.add_argument("--manifest", required=True, help="checkpoint manifest (the base model)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--batch-size", help="batch policy: auto, or sequences per forward")
    s.add_argument("--out", required=True, help="parquet of per-example bits per byte")

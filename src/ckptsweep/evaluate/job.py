"""The evaluation jobs: every variant of one checkpoint (`evaluate_checkpoint`), and the
prediction-method ablation of one model's final checkpoint (`ablation`).

Each variant (the base from the manifest, fine-tunes from their folders) is loaded once
and scored on its eval sets. Outputs are written under temporary names and renamed when
complete, so a stopped job never leaves an output that looks finished.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ckptsweep.errors import ConfigError, build
from ckptsweep.evaluate.config import METHODS, EvalConfig, EvalSet
from ckptsweep.files import staged_dir
from ckptsweep.progress import log as default_log


def eval_config(spec: dict, cache_dir: str | None, default_cache_dir: str | None = None,
                batch_size: str | None = None) -> EvalConfig:
    """The spec's ``evaluation`` block. The prediction cache: ``cache_dir`` (a flag) wins
    over the spec's ``cache_dir``, which wins over ``default_cache_dir`` (the workflow's);
    "" turns the cache off. ``batch_size`` (a flag: ``auto`` or a number) wins over the
    spec's (the workflow passes it as a resource, never in the spec)."""
    ev = dict(spec["evaluation"])
    ev["shots"] = tuple(ev["shots"])
    if batch_size is not None:
        ev["batch_size"] = int(batch_size) if batch_size.isdigit() else batch_size
    if cache_dir is not None:
        ev["cache_dir"] = cache_dir
    elif ev.get("cache_dir") is None:
        ev["cache_dir"] = default_cache_dir
    ev["cache_dir"] = ev["cache_dir"] or None
    return build(EvalConfig, ev, "evaluation")


def eval_sets(specs: list[dict]) -> list[EvalSet]:
    """The spec's ``sets`` entries as `EvalSet`s."""
    return [EvalSet(**{**s, "formats": tuple(s["formats"])}) for s in specs]


def evaluate_checkpoint(spec: dict, manifest: str, out: str | Path,
                        cache_dir: str | None = None, default_cache_dir: str | None = None,
                        batch_size: str | None = None, log=default_log) -> None:
    """``{out}/{variant}.parquet`` for every variant of the spec's checkpoint."""
    from ckptsweep.evaluate.run import evaluate_model
    from ckptsweep.evaluate.schema import write_predictions
    from ckptsweep.evaluate.variants import load_variant

    cfg = eval_config(spec, cache_dir, default_cache_dir, batch_size)
    with staged_dir(out) as tmp:
        for variant in spec["variants"]:
            model, tok, model_key = load_variant(manifest, spec["step"], variant["model"],
                                                 cfg, variant["name"])
            t0 = time.perf_counter()
            df = evaluate_model(model, tok, eval_sets(variant["sets"]), cfg, progress=log,
                                model_key=model_key)
            log(f"{variant['name']}: {len(df)} predictions in "
                f"{time.perf_counter() - t0:.1f}s; {int(df['truncated'].sum())} prompts "
                "truncated")
            summary = df.groupby(["eval_set", "format", "shots"])["score"].mean()
            log(f"{variant['name']}: mean score per eval set, format and shots:\n"
                + summary.to_string())
            write_predictions(df, tmp / f"{variant['name']}.parquet")
            del model


def ablation(spec: dict, manifest: str, out: str | Path, cache_dir: str | None = None,
             default_cache_dir: str | None = None, batch_size: str | None = None,
             log=default_log) -> None:
    """One parquet with ``model``, ``step`` and ``variant``: each variant scores its eval
    sets with every method of the spec."""
    import pandas as pd

    from ckptsweep.evaluate.run import evaluate_model
    from ckptsweep.evaluate.schema import ABLATION_SCHEMA, write_predictions
    from ckptsweep.evaluate.variants import load_variant

    cfg = eval_config(spec, cache_dir, default_cache_dir, batch_size)
    unknown = [m for m in spec["methods"] if m not in METHODS]
    if unknown:
        raise ConfigError("analysis.ablation.methods",
                          f"unknown {unknown}; known: {list(METHODS)}")
    sets = {s.name: s for s in eval_sets(spec["sets"])}
    frames = []
    t0 = time.perf_counter()
    for variant in spec["variants"]:
        model, tok, model_key = load_variant(manifest, spec["step"], variant["model"], cfg,
                                             variant["name"])
        for method in spec["methods"]:
            log(f"{variant['name']}: method {method}")
            df = evaluate_model(model, tok, [sets[n] for n in variant["sets"]],
                                dataclasses.replace(cfg, method=method), progress=log,
                                model_key=model_key)
            frames.append(df.assign(model=spec["model"], step=int(spec["step"]),
                                    variant=variant["name"]))
        del model
    df = pd.concat(frames, ignore_index=True)
    log(f"{len(df)} predictions in {time.perf_counter() - t0:.1f}s")
    summary = df.groupby(["variant", "eval_set", "shots", "method"], sort=False)["score"].mean()
    log("accuracy per variant, eval set, shots and method:\n" + summary.to_string())
    write_predictions(df, out, ABLATION_SCHEMA)

"""Where the cheap predictors' values come from, as per-example predictor rows (model,
step, eval_set, format, shots, metric, id, predictor, value; higher = predicted better)
or as series added to the advice panels:

- `logprob_values`: the base model's continuous metrics on classification sets, from the
  label log-likelihoods the evaluation saves (``label_logprobs`` in
  ``results/predictions/{model}/{step}/base.parquet``, `evaluate.schema`):
  ``gold_logprob`` (the gold label's log-likelihood), ``gold_logprob_norm`` (per
  character of the label, lm-evaluation-harness's length normalisation, as the
  evaluation's ``score_norm``: tokenizer-free, so comparable across checkpoints) and
  ``base_confidence`` (the probability of the predicted label, labels normalised by
  softmax, `transfer_population.example_values`). Multiple-choice sets need the gold
  index (the predictions keep the gold text, not the choices): pass ``gold_indices``
  (`transfer_population.gold_indices` of the test files), else they are skipped;
- `bpb_values`: generation sets: the per-example bits per byte of the reference under
  the base model (``ckptsweep bpb``, the workflow's ``bpb`` rule, `evaluate.bpb`),
  negated so that higher is better;
- `add_proxy`: a proxy fine-tune's scores (same fine-tune on a fraction of the data and
  steps, scored on a small dev slice; scores schema) as a predictor series;
- `transfer_panels`: the transfer population (``transfer_metrics`` of ``transfer_tables``):
  per model and benchmark, its checkpoints after SFT judged by their pre-SFT accuracy,
  confidence and gold-choice probability.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ckptsweep.analysis.advisor_draws import GROUP, TRUTH, Panel, Series, normal_series
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.mrc import PRIMARY
from ckptsweep.analysis.transfer_population import example_values
from ckptsweep.data.tasks import TASK_TYPES

ROW_COLUMNS = ["model", "step", "eval_set", "format", "shots", "metric", "id", "predictor",
               "value"]
LOGPROB_PREDICTORS = ("gold_logprob", "gold_logprob_norm", "base_confidence")
TRANSFER_PREDICTORS = {"pre_accuracy": "accuracy", "pre_confidence": "confidence",
                       "pre_gold_prob": "gold_prob"}


def _gold_index(task: str, eval_set: str, ident: str, gold: str,
                gold_indices: Mapping | None) -> int | None:
    t = TASK_TYPES.get(task)
    if t is not None and t.kind == "classification" and gold in t.labels:
        return t.labels.index(gold)
    if gold_indices is not None:
        return gold_indices.get((eval_set, ident))
    return None


def logprob_values(predictions_dir: str | os.PathLike,
                   gold_indices: Mapping[tuple[str, str], int] | None = None) -> pd.DataFrame:
    """Per-example predictor rows from every ``{model}/{step}/base.parquet`` under the
    folder (the workflow's predictions layout). Rows without label log-likelihoods
    (generation, free decoding) or without a known gold index are skipped."""
    rows = []
    for path in sorted(Path(predictions_dir).glob("*/*/base.parquet")):
        model, step = path.parent.parent.name, path.parent.name
        if not step.isdigit():
            continue
        df = pd.read_parquet(path, columns=["eval_set", "task", "format", "shots", "id",
                                            "gold", "label_logprobs", "metric"])
        df = df[df["label_logprobs"].map(lambda v: v is not None and len(v) > 0)]
        gold = [_gold_index(t, e, i, g, gold_indices) for t, e, i, g in
                zip(df["task"], df["eval_set"], df["id"], df["gold"], strict=True)]
        keep = np.array([g is not None for g in gold], dtype=bool)
        df, gold = df[keep], [g for g in gold if g is not None]
        if df.empty:
            continue
        lps = [np.asarray(v, dtype=float) for v in df["label_logprobs"]]
        vals = example_values(lps, gold)
        gold_lp = np.array([lp[g] for lp, g in zip(lps, gold, strict=True)])
        chars = np.array([max(len(str(g)), 1) for g in df["gold"]])
        base = df[["eval_set", "format", "shots", "metric", "id"]].reset_index(drop=True)
        base.insert(0, "step", int(step))
        base.insert(0, "model", model)
        for name, value in (("gold_logprob", gold_lp), ("gold_logprob_norm", gold_lp / chars),
                            ("base_confidence", vals["confidence"].to_numpy())):
            rows.append(base.assign(predictor=name, value=value))
    if not rows:
        return pd.DataFrame(columns=ROW_COLUMNS)
    return pd.concat(rows, ignore_index=True)[ROW_COLUMNS]


def bpb_values(table: pd.DataFrame) -> pd.DataFrame:
    """The generation hook: per-example ``bits_per_byte`` of the base model on the gold
    text (columns model, step, eval_set, format, shots, id, bits_per_byte) as the
    predictor ``neg_bits_per_byte`` (negated: fewer bits = predicted better)."""
    need = ["model", "step", "eval_set", "format", "shots", "id", "bits_per_byte"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"bits-per-byte table lacks column(s) {missing}")
    out = table[need[:-1]].copy()
    out["metric"] = table["metric"] if "metric" in table.columns else "rouge_l"
    out["predictor"] = "neg_bits_per_byte"
    out["value"] = -table["bits_per_byte"].to_numpy(dtype=float)
    return out[ROW_COLUMNS]


def add_proxy(panels: list[Panel], proxy: pd.DataFrame, settings: AdvisorSettings,
              name: str = "proxy_finetune") -> list[str]:
    """Add the proxy fine-tune's scores to every panel it covers, as the series ``name``.

    ``proxy`` has the scores schema. It meets a panel on model, fine-tuning task, role,
    format, shots and metric (not learning rate or eval set: the proxy may use its own
    learning rate and a dev slice of its own name); its value per checkpoint is the mean
    over its sets of that role, with normal draws from its intervals (no noise where it
    has none). Returns notes on the panels it could not cover."""
    notes = []
    p = proxy[(proxy["variant"] != "base") & proxy["metric"].isin(PRIMARY)]
    rng = np.random.default_rng([settings.seed, 1])  # its own stream: the truth's unchanged
    keys = [k for k in GROUP if k != "lr"]
    for panel in panels:
        sel = np.ones(len(p), dtype=bool)
        for k in keys:
            sel &= (p[k] == panel.key[k]).to_numpy()
        sub = p[sel & p["step"].isin(panel.steps).to_numpy()]
        steps = [int(s) for s in panel.steps]
        sets = tuple(sorted(sub["eval_set"].unique()))
        series = normal_series(sub, steps, sets, settings.ci_level) if len(sub) else None
        if series is None:
            notes.append(f"proxy: no complete proxy scores for {panel.key}")
            continue
        if np.isfinite(series.se).all():
            series.draws = rng.normal(series.point, series.se,
                                      (settings.n_boot, series.point.size))
        panel.series[name] = series
    return notes


def transfer_panels(metrics: pd.DataFrame, settings: AdvisorSettings,
                    shots: int = 0, fmt: str = "default") -> list[Panel]:
    """One normal panel (role ``transfer``) per model and benchmark of the transfer population's
    ``transfer_metrics`` table (two or more checkpoints): the truth is the post-SFT
    accuracy, its standard error sqrt(p(1 - p) / n) (a binomial proportion; conservative
    where seeds were averaged); predictors ``pre_accuracy`` (same error) and the pre-SFT
    confidence and gold probability (no known noise)."""
    panels = []
    rng = np.random.default_rng(settings.seed)
    for (model, bench), g in metrics.groupby(["model", "eval_set"], sort=True):
        pre = g[g["stage"] == "pre"].set_index("step").sort_index()
        post = g[g["stage"] == "post"].set_index("step").sort_index()
        steps = sorted(set(pre.index) & set(post.index))
        if len(steps) < 2:
            continue
        pre, post = pre.loc[steps], post.loc[steps]

        def binomial(df: pd.DataFrame) -> Series:
            p, n = df["accuracy"].to_numpy(dtype=float), df["n"].to_numpy(dtype=float)
            se = np.sqrt(p * (1 - p) / n)
            return Series(p, rng.normal(p, se, (settings.n_boot, p.size)), se)

        series = {TRUTH: binomial(post), "pre_accuracy": binomial(pre)}
        for name, col in TRANSFER_PREDICTORS.items():
            if name != "pre_accuracy":
                series[name] = Series(pre[col].to_numpy(dtype=float))
        key = {"model": model, "train_task": "sft", "lr": float("nan"), "role": "transfer",
               "format": fmt, "shots": shots, "metric": "accuracy"}
        panels.append(Panel(key, np.array(steps), np.full(len(steps), np.nan), (bench,),
                            "normal", series))
    return panels

"""The adaptive sweep's two decisions (config ``advisor.mode: adaptive``):

- `select` (the Snakemake checkpoint ``adaptive_select``): rank every checkpoint of a
  model by the proxy fine-tune's dev scores and keep the ``k`` best besides the last
  checkpoint, plus the last (always fine-tuned: the practitioner's default, and the
  baseline the advice is measured against). A checkpoint's evaluation job covers every
  fine-tune of it, so the choice is per model: each task ranks the checkpoints by its
  proxy score (mean over dev formats, shots and seeds; rank 1 best, ties averaged) and
  checkpoints are ordered by their mean rank over tasks (ties: the higher mean proxy
  score, then the later step).
- `recommend` (the final rule): the advice (`advisor.advise`) on the checkpoints that
  were fine-tuned: per group the best of them with its interval, the last checkpoint's
  regret with its interval and the earliest non-inferior one; where a finished full
  grid's scores are given, the full grid's best and the regret of the recommendation
  against it; and the GPU-hours the sweep spent (this run's ``benchmarks/``: proxy,
  fine-tune and evaluation jobs) against the full grid's (`spent_hours`; the full grid's
  from ``ckptsweep.operate.sweep``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ckptsweep.analysis.advisor import advise, build_panels, job_hours
from ckptsweep.analysis.advisor_draws import GROUP
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.mrc import PRIMARY
from ckptsweep.analysis.settings import GPUS_PER_JOB

SPENT_RULES = ("proxy", "finetune", "evaluate")


def select(proxy: pd.DataFrame, models: Mapping[str, list[int]], k: int) -> dict:
    """{"k", "predictor", "models": {model: {"steps", "last", "top_k", "ranking"}}}: see
    the module's doc. A checkpoint the proxy did not score is an error (the proxy rule
    runs on every one)."""
    p = proxy[(proxy["variant"] != "base") & proxy["metric"].isin(PRIMARY)]
    out = {"k": int(k), "predictor": "proxy_finetune", "models": {}}
    for model, steps in models.items():
        steps = sorted(int(s) for s in steps)
        last = steps[-1]
        values = p[p["model"] == model].groupby(["train_task", "step"])["value"].mean()
        table = values.unstack("step")
        missing = [s for s in steps if s not in table.columns]
        if table.empty or missing:
            raise ValueError(f"{model}: no proxy scores for checkpoint(s) "
                             f"{missing or steps}")
        table = table[steps]
        ranks = table.rank(axis=1, ascending=False, method="average").mean(axis=0)
        means = table.mean(axis=0)
        order = sorted((s for s in steps if s != last),
                       key=lambda s: (ranks[s], -means[s], -s))
        chosen = order[:k]
        out["models"][model] = {
            "steps": sorted([*chosen, last]), "last": last, "top_k": chosen,
            "ranking": [{"step": s, "mean_rank": float(ranks[s]),
                         "mean_proxy": float(means[s]),
                         "proxy": {t: float(table.loc[t, s]) for t in table.index}}
                        for s in sorted(steps, key=lambda s: (ranks[s], -means[s], -s))]}
    return out


def spent_hours(benchmarks: str | os.PathLike, models,
                gpus_per_job: Mapping[str, float] | None = None) -> dict[str, float]:
    """GPU hours per rule of ``SPENT_RULES`` that this run's jobs of ``models`` spent
    (the proxy counts the fine-tune's GPUs unless ``gpus_per_job`` names it)."""
    gpus = dict(GPUS_PER_JOB if gpus_per_job is None else gpus_per_job)
    gpus.setdefault("proxy", gpus.get("finetune", 1))
    out = {}
    for rule in SPENT_RULES:
        h = job_hours(benchmarks, rule, gpus)
        out[rule] = float(h[h["model"].isin(list(models))]["gpu_hours"].sum())
    return out


def _full_values(full: pd.DataFrame, key: Mapping, sets: list[str]) -> pd.Series:
    """Step -> the full grid's value of one group (mean over its sets of the mean over
    seeds), on the steps that have every set."""
    sel = full["variant"] != "base"
    for k in GROUP:
        if k == "lr":
            sel &= np.isclose(full["lr"].astype(float), float(key["lr"]))
        else:
            sel &= full[k] == key[k]
    g = full[sel & full["eval_set"].isin(sets)]
    per_set = g.groupby(["step", "eval_set"])["value"].mean().unstack("eval_set")
    return per_set.dropna().mean(axis=1) if len(per_set) else pd.Series(dtype=float)


def recommend(scores: pd.DataFrame, examples: pd.DataFrame | None, selection: Mapping,
              settings: AdvisorSettings, benchmarks: str | os.PathLike | None = None,
              full_scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per advice group on the fine-tuned checkpoints (see the module's doc)."""
    panels = build_panels(scores, examples, settings)
    advice, per_step = advise(panels, settings, benchmarks)
    if advice.empty:
        return advice
    rows = []
    for _, a in advice.iterrows():
        sel = np.ones(len(per_step), dtype=bool)
        for k in [*GROUP, "eval_sets"]:
            sel &= (per_step[k].astype(str) == str(a[k])).to_numpy()
        g = per_step[sel]
        best = g[g["is_best"]].iloc[0]
        model = selection["models"].get(a["model"], {})
        row = {k: a[k] for k in [*GROUP, "eval_sets", "test"]}
        row.update({"checkpoints": ",".join(str(int(s)) for s in sorted(g["step"])),
                    "top_k_predicted": ",".join(str(s) for s in model.get("top_k", [])),
                    "recommended_step": int(a["best_step"]),
                    "recommended_value": float(a["best_value"]),
                    "recommended_low": float(best["ci_low"]),
                    "recommended_high": float(best["ci_high"]),
                    "last_step": int(a["last_step"]), "last_value": float(a["last_value"]),
                    "last_regret": float(a["regret"]), "last_regret_low": a["regret_low"],
                    "last_regret_high": a["regret_high"],
                    "earliest_noninferior_step": int(a["earliest_step"])})
        if full_scores is not None:
            v = _full_values(full_scores, a, str(a["eval_sets"]).split(","))
            rec = int(a["best_step"])
            if len(v) and rec in v.index:
                best_step = int(v.index[int(np.argmax(v.to_numpy()))])
                row.update({"full_best_step": best_step, "full_best_value": float(v.max()),
                            "full_value_at_recommended": float(v[rec]),
                            "regret_vs_full_best": float(v.max() - v[rec]),
                            "found_full_best": best_step == rec,
                            "full_checkpoints": len(v)})
        rows.append(row)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, selection: Mapping, spent: Mapping[str, float],
            full: Mapping) -> dict:
    """The recommendation's JSON: the selection, the in-domain rows, and the GPU hours
    spent against the full grid's (``full``: {"finetune", "evaluate", "basis"})."""
    spent_total = float(sum(spent.values()))
    full_total = float(full.get("finetune", np.nan) + full.get("evaluate", np.nan))
    ft_spent = spent.get("proxy", 0.0) + spent.get("finetune", 0.0)
    cost = {"spent_gpu_hours": dict(spent), "spent_total": spent_total,
            "full_grid_gpu_hours": {k: full.get(k) for k in ("finetune", "evaluate")},
            "full_grid_total": full_total, "full_grid_basis": full.get("basis"),
            "fraction_of_full_grid": spent_total / full_total if full_total else None,
            "finetune_fraction": (ft_spent / full["finetune"] if full.get("finetune")
                                  else None),
            "notes": list(full.get("notes", []))}
    main = table[table["role"] == "id"] if len(table) else table
    return {"selection": dict(selection), "cost": cost,
            "in_domain": main.replace({np.nan: None}).to_dict(orient="records")}

"""Cheap predictors of the post-fine-tuning ranking of checkpoints, validated against the
full grid, and what each costs.

Every advice `Panel` holds the truth (fine-tuned scores per checkpoint) and the
predictors available for it (`predictor_sources`; the base few-shot score comes with the
panel); `add_step` adds the baseline every other predictor must beat: the step itself
("later is better"). `validate` scores each predictor on each panel with the `ranking`
metrics (Spearman, Kendall, pairwise decision accuracy, top-1 regret, top-k hit rate),
each with a two-sided 1 - alpha percentile interval over the panel's draws: the truth's
bootstrap or normal draws paired with the predictor's own (a predictor with no known
noise, like the step, is held fixed). A panel whose truth has no interval (``point``)
gives no interval.

`pool` combines the panels of one role x format x shots (transfer panels have the role
``transfer``): decision accuracy over all their untied pairs, the other metrics as means
over panels (top-1 regret then mixes the metrics' units, accuracy and ROUGE-L, as the
paper's tables do), with the same draw-wise intervals, a second interval for decision
accuracy from resampling the panels themselves (would it hold on other tasks?), and the
gain over the step baseline on the same panels, draw by draw (paired).

Cost (`costs`): GPU hours of one fine-tune ``f`` and of one variant's evaluation ``e``,
measured from ``benchmarks/`` (an evaluation job covers every variant of its checkpoint:
its time is split evenly over them), else the settings' assumed ``finetune_hours`` and
``eval_hours``; with neither, every job counts one unit (basis ``jobs``). The full grid
of a panel costs sum over checkpoints of its fine-tunes x (f + e); the step costs nothing;
base predictors one base evaluation per checkpoint (C x e, charged in full to every task
although one base evaluation serves them all); the proxy what its own jobs measured
(`measured_hours`: ``benchmarks/proxy/{model}/{step}.tsv``, one job per checkpoint shared
out evenly over the tasks it proxied), else the assumed ``proxy_cost`` x the grid.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from ckptsweep.analysis.advisor import job_hours
from ckptsweep.analysis.advisor_draws import GROUP, TRUTH, Panel, Series
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.ranking import METRICS, decision_counts, metrics
from ckptsweep.analysis.settings import GPUS_PER_JOB
from ckptsweep.analysis.transfer_population import cell_rng, percentile_interval

BASELINE = "step"
POOL = ["role", "format", "shots"]
ORDER = ("step", "base_fewshot", "gold_logprob", "gold_logprob_norm", "base_confidence",
         "neg_bits_per_byte", "proxy_finetune", "pre_accuracy", "pre_confidence",
         "pre_gold_prob")
"""Row order of the tables (others follow, alphabetically)."""


def add_step(panels: list[Panel]) -> None:
    """The baseline predictor: the pre-training step itself (no noise)."""
    for p in panels:
        p.series[BASELINE] = Series(p.steps.astype(float))


def _order(names) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _cells(panel: Panel, name: str, settings: AdvisorSettings) -> dict:
    """The predictor's metrics on the panel: point values, per-draw values (or None)."""
    t, s = panel.truth, panel.series[name]
    point = metrics(t.point, s.point, settings.top_k, settings.truth_tol)
    credit, counted = decision_counts(t.point, s.point, settings.truth_tol)
    out = {"point": point, "credit": float(credit), "counted": float(counted), "draws": None}
    if t.draws is not None:
        pred = s.draws if s.draws is not None else s.point
        out["draws"] = metrics(t.draws, pred, settings.top_k, settings.truth_tol)
        out["credit_b"], out["counted_b"] = decision_counts(t.draws, pred, settings.truth_tol)
    return out


# ------------------------------------------------------------------ cost

def costs(panels: list[Panel], scores: pd.DataFrame | None,
          benchmarks: str | os.PathLike | None,
          settings: AdvisorSettings) -> tuple[float, float, str]:
    """(GPU hours of one fine-tune, of one variant's evaluation, basis); see the doc."""
    ft = job_hours(benchmarks, "finetune", settings.gpus_per_job)
    ev = job_hours(benchmarks, "evaluate", settings.gpus_per_job)
    f, fb = (float(ft["gpu_hours"].mean()), "benchmarks") if len(ft) else (
        settings.finetune_hours, "assumed")
    e, eb = None, "assumed"
    if len(ev) and scores is not None:
        n_var = scores.groupby(["model", "step"])["variant"].nunique()
        share = [r.gpu_hours / n_var.get((r.model, r.step), 1) for r in ev.itertuples()]
        e, eb = float(np.mean(share)), "benchmarks"
    elif settings.eval_hours is not None:
        e = settings.eval_hours
    if f is None or e is None:
        return 1.0, 1.0, "jobs"
    return float(f), float(e), fb if fb == eb else f"{fb}+{eb}"


def measured_hours(benchmarks: str | os.PathLike | None, proxy: pd.DataFrame | None,
                   settings: AdvisorSettings) -> dict[str, dict[tuple[str, int], float]]:
    """Predictor -> (model, step) -> GPU hours of its own jobs, where they left benchmark
    files: the proxy's per task it served (GPUs per job: ``gpus_per_job['proxy']``, else
    the fine-tune's), the bits-per-byte job's whole (charged to every task, as a base
    evaluation is; ``gpus_per_job['bpb']``, else the evaluation's)."""
    if benchmarks is None:
        return {}
    gpus = dict(GPUS_PER_JOB if settings.gpus_per_job is None else settings.gpus_per_job)
    gpus.setdefault("proxy", gpus.get("finetune", 1))
    gpus.setdefault("bpb", gpus.get("evaluate", 1))
    out = {}
    jobs = job_hours(benchmarks, "proxy", gpus)
    if proxy is not None and len(jobs):
        tasks = proxy[proxy["variant"] != "base"].groupby(["model", "step"])[
            "train_task"].nunique()
        out["proxy_finetune"] = {(r.model, int(r.step)): r.gpu_hours
                                 / max(int(tasks.get((r.model, r.step), 1)), 1)
                                 for r in jobs.itertuples()}
    jobs = job_hours(benchmarks, "bpb", gpus)
    if len(jobs):
        out["neg_bits_per_byte"] = {(r.model, int(r.step)): r.gpu_hours
                                    for r in jobs.itertuples()}
    return out


def predictor_cost(name: str, panel: Panel, f: float, e: float, settings: AdvisorSettings,
                   measured: dict | None = None) -> tuple[float, float]:
    """(GPU hours the predictor costs on the panel, GPU hours of the panel's full grid)."""
    per_step = [len(panel.variants.get(int(s), [])) or 1 for s in panel.steps]
    grid = float(sum(n * (f + e) for n in per_step))
    if name == BASELINE:
        return 0.0, grid
    own = (measured or {}).get(name, {})
    cells = [(panel.key["model"], int(s)) for s in panel.steps]
    if own and all(c in own for c in cells):
        return float(sum(own[c] for c in cells)), grid
    if name == "proxy_finetune":
        return settings.proxy_cost * grid, grid
    return float(panel.steps.size * e), grid  # every other predictor: a base evaluation


# ------------------------------------------------------------------ validation

def _interval(values, alpha: float) -> tuple[float, float]:
    return percentile_interval(np.asarray(values, dtype=float), alpha)


def validate(panels: list[Panel], settings: AdvisorSettings, unit: tuple[float, float],
             measured: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """(per-panel table, cells for `pool`) of every predictor on every panel (costs:
    `predictor_cost`, with `measured_hours`)."""
    rows, cells = [], {}
    for i, panel in enumerate(panels):
        for name in _order(n for n in panel.series if n != TRUTH):
            c = _cells(panel, name, settings)
            c["cost"], c["grid"] = predictor_cost(name, panel, *unit, settings, measured)
            cells[(i, name)] = c
            row = {**{k: panel.key[k] for k in GROUP}, "eval_sets": ",".join(panel.eval_sets),
                   "test": panel.test, "predictor": name, "n_checkpoints": panel.steps.size,
                   "n_pairs": int(c["counted"])}
            for m in METRICS:
                row[m] = float(c["point"][m])
                row[f"{m}_low"], row[f"{m}_high"] = (
                    _interval(c["draws"][m], settings.alpha) if c["draws"] is not None
                    else (np.nan, np.nan))
            row["cost_fraction"] = c["cost"] / c["grid"] if c["grid"] > 0 else np.nan
            rows.append(row)
    return pd.DataFrame(rows), cells


def _pooled(members: list[dict], settings: AdvisorSettings) -> dict:
    """Pooled point values and draws (a panel without draws repeats its point)."""
    n_boot = settings.n_boot

    def drawn(c, key, m=None):
        if c["draws"] is None:
            v = c["point"][m] if m else c[key.removesuffix("_b")]
            return np.full(n_boot, float(v))
        return np.asarray(c["draws"][m] if m else c[key], dtype=float)

    credit = sum(c["credit"] for c in members)
    counted = sum(c["counted"] for c in members)
    cb = sum(drawn(c, "credit_b") for c in members)
    nb = sum(drawn(c, "counted_b") for c in members)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"decision_accuracy": (credit / counted if counted else np.nan,
                                     np.where(nb > 0, cb / np.maximum(nb, 1), np.nan))}
    for m in METRICS:
        if m != "decision_accuracy":
            pts = [float(c["point"][m]) for c in members]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN draws: NaN
                out[m] = (np.nanmean(pts) if np.isfinite(pts).any() else np.nan,
                          np.nanmean(np.vstack([drawn(c, "", m) for c in members]), axis=0))
    return out


def pool(panels: list[Panel], cells: dict, settings: AdvisorSettings) -> pd.DataFrame:
    """One row per predictor and role x format x shots (see the module's doc)."""
    rows = []
    keys = sorted({tuple(p.key[k] for k in POOL) for p in panels}, key=str)
    for key in keys:
        idx = [i for i, p in enumerate(panels) if tuple(p.key[k] for k in POOL) == key]
        names = _order({n for (i, n) in cells if i in idx})
        for name in names:
            have = [i for i in idx if (i, name) in cells]
            members = [cells[(i, name)] for i in have]
            stats = _pooled(members, settings)
            base = _pooled([cells[(i, BASELINE)] for i in have], settings)
            row = {**dict(zip(POOL, key, strict=True)), "predictor": name,
                   "n_groups": len(have), "n_pairs": int(sum(c["counted"] for c in members))}
            for m in METRICS:
                row[m] = float(stats[m][0])
                row[f"{m}_low"], row[f"{m}_high"] = _interval(stats[m][1], settings.alpha)
            # Resampling the groups: which tasks happened to be in the grid.
            rng = cell_rng(settings.seed, "pool", *map(str, key), name)
            pick = rng.integers(0, len(have), (settings.n_boot, len(have)))
            cr = np.array([members[j]["credit"] for j in range(len(have))])
            co = np.array([members[j]["counted"] for j in range(len(have))])
            with np.errstate(invalid="ignore", divide="ignore"):
                group_acc = cr[pick].sum(axis=1) / co[pick].sum(axis=1)
            row["decision_accuracy_group_low"], row["decision_accuracy_group_high"] = (
                _interval(group_acc, settings.alpha))
            row["step_decision_accuracy"] = float(base["decision_accuracy"][0])
            gain = stats["decision_accuracy"][1] - base["decision_accuracy"][1]
            row["gain_vs_step"] = row["decision_accuracy"] - row["step_decision_accuracy"]
            row["gain_vs_step_low"], row["gain_vs_step_high"] = _interval(gain, settings.alpha)
            grid = sum(c["grid"] for c in members)
            row["cost_fraction"] = sum(c["cost"] for c in members) / grid if grid else np.nan
            rows.append(row)
    return pd.DataFrame(rows)

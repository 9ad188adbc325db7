"""Retrospective checkpoint advice on a finished grid: which pre-training checkpoint to
fine-tune, and what knowing it would have saved.

For every group (model x fine-tuning task x learning rate x eval role x format x shots x
metric; see ``advisor_draws``), over its checkpoints after fine-tuning:

- **best**: the highest mean (ties: the earliest, the cheaper one);
- **the last checkpoint's regret**: best - last, with a two-sided 1 - alpha interval for
  the difference of those two checkpoints (paired bootstrap, or normal on the released
  intervals). It is conditional on which checkpoint came out best: picking the maximum
  of noisy means inflates it (winner's curse); the non-inferiority test below is the
  decision that accounts for the noise;
- **the earliest non-inferior checkpoint**: the earliest checkpoint c for which a
  one-sided test at level alpha rejects "best - c >= epsilon", i.e. whose one-sided
  upper 1 - alpha bound of best - c is below epsilon (`noninferiority`). Bootstrap: the
  (1 - alpha) percentile of the paired resampled differences (what
  ``stats.paired_bootstrap(best, c, alpha=2 * alpha)`` reports as its upper end); normal:
  gap + z * sqrt(se_best^2 + se_c^2) with the cells taken as independent (the release has
  no pairing, so this is conservative). The best itself is non-inferior by definition.
  The ``test`` column says which test ran (``point``: no interval known; the decision is
  then on the point gap alone and is no test);
- **compute saved**: had pre-training stopped at that checkpoint, (last - earliest) steps
  x tokens per step x 6N FLOPs at the stated MFU and peak (`pretrain_gpu_hours`); and
  the fine-tunes the grid ran that the advice makes unnecessary (every fine-tune of this
  configuration at another checkpoint), measured from Snakemake's ``benchmarks/`` where
  the files exist (``cost`` reads them), else ``finetune_hours`` per fine-tune if assumed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from ckptsweep.analysis.advisor_draws import (
    GROUP,
    Panel,
    panels_from_examples,
    panels_from_scores,
)
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.cost import _read_benchmark
from ckptsweep.analysis.settings import GPUS_PER_JOB

STEP_COLUMNS = [*GROUP, "eval_sets", "step", "tokens", "value", "ci_low", "ci_high", "gap", "bound",
                "p_value", "noninferior", "is_best", "is_earliest", "is_last"]


# ------------------------------------------------------------------ the tests

def _pair(panel: Panel, i: int, j: int) -> tuple[float, np.ndarray | None, float]:
    """(point of series i - series j of the truth, its draws, its normal se)."""
    t = panel.truth
    gap = float(t.point[i] - t.point[j])
    d = None if t.draws is None or panel.test != "bootstrap" else t.draws[:, i] - t.draws[:, j]
    se = float("nan") if t.se is None else float(np.hypot(t.se[i], t.se[j]))
    return gap, d, se


def noninferiority(panel: Panel, epsilon: float, alpha: float) -> pd.DataFrame:
    """Per checkpoint: gap = best - c, the one-sided upper 1 - alpha ``bound`` of it, the
    test's ``p_value`` and whether c is ``noninferior`` (bound < epsilon)."""
    best = int(np.argmax(panel.truth.point))  # first maximum: the earliest of tied bests
    z = norm.ppf(1 - alpha)
    rows = []
    for c in range(panel.steps.size):
        gap, d, se = _pair(panel, best, c)
        if c == best:
            bound, p = 0.0, float("nan")
        elif panel.test == "bootstrap":
            bound = float(np.quantile(d, 1 - alpha))
            p = float(np.mean(d >= epsilon))  # the share of resamples on H0's side
        elif panel.test == "normal":
            bound = gap + z * se
            p = float(norm.cdf((gap - epsilon) / se)) if se > 0 else float(gap >= epsilon)
        else:
            bound, p = gap, float("nan")
        rows.append({"gap": gap, "bound": bound, "p_value": p,
                     "noninferior": bool(c == best or bound < epsilon)})
    return pd.DataFrame(rows)


def _interval(panel: Panel, i: int, j: int | None, alpha: float) -> tuple[float, float]:
    """Two-sided 1 - alpha interval of series i (j None) or of i - j."""
    t = panel.truth
    if j is not None and i == j:
        return 0.0, 0.0
    if panel.test == "bootstrap":
        d = t.draws[:, i] - (0 if j is None else t.draws[:, j])
        lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)
    if panel.test == "normal":
        point = t.point[i] - (0 if j is None else t.point[j])
        se = t.se[i] if j is None else np.hypot(t.se[i], t.se[j])
        z = norm.ppf(1 - alpha / 2)
        return float(point - z * se), float(point + z * se)
    return float("nan"), float("nan")


# ------------------------------------------------------------------ compute

def pretrain_gpu_hours(steps: float, tokens_per_step: float, n_params: float | None,
                       mfu: float, peak_tflops: float) -> float:
    """GPU hours of ``steps`` pre-training steps: steps x tokens x 6N FLOPs (forward and
    backward, Kaplan et al. 2020) over mfu x peak FLOP/s. NaN without ``n_params``."""
    if n_params is None or not np.isfinite(tokens_per_step):
        return float("nan")
    return float(steps * tokens_per_step * 6 * n_params / (mfu * peak_tflops * 1e12) / 3600)


def job_hours(benchmarks: str | os.PathLike | None, rule: str,
              gpus_per_job: Mapping[str, float] | None = None) -> pd.DataFrame:
    """GPU hours per job of ``rule`` from ``{benchmarks}/{rule}/{model}/{step}[/{name}].tsv``:
    model, step, name ("" for per-checkpoint jobs), gpu_hours (all rows of a file: a
    ``repeat()``-ed benchmark ran that many times). Empty without the folder."""
    cols = ["model", "step", "name", "gpu_hours"]
    root = Path(benchmarks) / rule if benchmarks is not None else None
    if root is None or not root.is_dir():
        return pd.DataFrame(columns=cols)
    gpus = float(dict(GPUS_PER_JOB if gpus_per_job is None else gpus_per_job).get(rule, 0))
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        parts = path.relative_to(root).with_suffix("").parts
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            continue  # not a {model}/{step}[/{name}] job of a checkpoint
        rows.append({"model": parts[0], "step": int(parts[1]),
                     "name": parts[2] if len(parts) == 3 else "",
                     "gpu_hours": float(_read_benchmark(path)["s"].sum()) * gpus / 3600})
    return pd.DataFrame(rows, columns=cols)


def _param(value, model: str):
    """A setting given once or per model (a mapping)."""
    return value.get(model) if isinstance(value, Mapping) else value


def tokens_per_step(panel: Panel, settings: AdvisorSettings) -> float:
    """The setting, else the scores' tokens / step at the latest checkpoint with both."""
    tps = _param(settings.tokens_per_step, panel.key["model"])
    if tps is not None:
        return float(tps)
    ok = (panel.steps > 0) & np.isfinite(panel.tokens) & (panel.tokens > 0)
    return float(panel.tokens[ok][-1] / panel.steps[ok][-1]) if ok.any() else float("nan")


def finetune_cost(panel: Panel, finetunes: pd.DataFrame, settings: AdvisorSettings,
                  keep_step: int) -> tuple[float, float, str]:
    """(GPU hours of this configuration's fine-tunes at every checkpoint but ``keep_step``,
    of all of them, basis): measured where a benchmark file exists, else the assumed
    ``finetune_hours``; NaN where neither is known."""
    measured = {(int(r.step), r.name): r.gpu_hours for r in finetunes.itertuples()
                if r.model == panel.key["model"]}
    hours, bases = {}, set()
    for step, variants in panel.variants.items():
        for v in variants:
            if (int(step), v) in measured:
                h, b = measured[(int(step), v)], "benchmarks"
            else:
                h, b = settings.finetune_hours, "assumed"
                h = float("nan") if h is None else float(h)
            hours[(int(step), v)] = h
            bases.add(b if np.isfinite(h) else "unknown")
    grid = float(sum(hours.values()))
    saved = float(sum(h for (s, _), h in hours.items() if s != keep_step))
    return saved, grid, "+".join(sorted(bases))


# ------------------------------------------------------------------ the advice

def advise_panel(panel: Panel, settings: AdvisorSettings,
                 finetunes: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """(the advice row, the per-checkpoint rows) of one group."""
    eps, alpha = settings.epsilon, settings.alpha
    t, steps = panel.truth, panel.steps
    ni = noninferiority(panel, eps, alpha)
    best, last = int(np.argmax(t.point)), steps.size - 1
    earliest = int(np.flatnonzero(ni["noninferior"].to_numpy())[0])
    lo, hi = _interval(panel, best, last, alpha)
    tps = tokens_per_step(panel, settings)
    saved_steps = float(steps[last] - steps[earliest])
    n_params = _param(settings.n_params, panel.key["model"])
    ft_saved, ft_grid, basis = finetune_cost(panel, finetunes, settings, int(steps[earliest]))
    row = {**panel.key, "eval_sets": ",".join(panel.eval_sets), "n_checkpoints": steps.size,
           "test": panel.test, "epsilon": eps, "alpha": alpha,
           "best_step": int(steps[best]), "best_value": float(t.point[best]),
           "last_step": int(steps[last]), "last_value": float(t.point[last]),
           "last_is_best": best == last,
           "regret": float(t.point[best] - t.point[last]), "regret_low": lo, "regret_high": hi,
           "earliest_step": int(steps[earliest]), "earliest_value": float(t.point[earliest]),
           "earliest_gap": float(ni["gap"].iloc[earliest]),
           "earliest_bound": float(ni["bound"].iloc[earliest]),
           "noninferior_steps": ",".join(str(int(s)) for s in steps[ni["noninferior"].to_numpy()]),
           "tokens_per_step": tps, "pretrain_steps_saved": saved_steps,
           "pretrain_gpu_hours_saved": pretrain_gpu_hours(
               saved_steps, tps, n_params, settings.mfu, settings.peak_tflops),
           "pretrain_gpu_hours_last": pretrain_gpu_hours(
               float(steps[last]), tps, n_params, settings.mfu, settings.peak_tflops),
           "n_params": n_params, "mfu": settings.mfu, "peak_tflops": settings.peak_tflops,
           "gpu": settings.gpu, "finetune_gpu_hours_saved": ft_saved,
           "finetune_gpu_hours_grid": ft_grid, "finetune_cost_basis": basis,
           "notes": "; ".join(panel.notes)}
    per = ni.assign(**{k: panel.key[k] for k in GROUP}, eval_sets=",".join(panel.eval_sets),
                    step=steps.astype(int),
                    tokens=panel.tokens, value=t.point)
    bounds = [_interval(panel, c, None, alpha) for c in range(steps.size)]
    per["ci_low"], per["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    per["is_best"] = np.arange(steps.size) == best
    per["is_earliest"] = np.arange(steps.size) == earliest
    per["is_last"] = np.arange(steps.size) == last
    return row, per[STEP_COLUMNS]


def build_panels(scores: pd.DataFrame, examples: pd.DataFrame | None,
                 settings: AdvisorSettings, extra: pd.DataFrame | None = None) -> list[Panel]:
    """Bootstrap panels with per-example scores, else normal panels from the intervals."""
    if examples is not None:
        return panels_from_examples(examples, settings, extra)
    return panels_from_scores(scores, settings)


def advise(panels: list[Panel], settings: AdvisorSettings,
           benchmarks: str | os.PathLike | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(advisor table, per-checkpoint table) of every panel (`build_panels`)."""
    finetunes = job_hours(benchmarks, "finetune", settings.gpus_per_job)
    rows, steps = [], []
    for panel in panels:
        row, per = advise_panel(panel, settings, finetunes)
        rows.append(row)
        steps.append(per)
    advice = pd.DataFrame(rows)
    per_step = pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(
        columns=STEP_COLUMNS)
    return advice, per_step

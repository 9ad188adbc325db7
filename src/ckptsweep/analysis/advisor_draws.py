"""The checkpoints of one advice group with their sampling noise: `Panel`, built from the
per-example table (`panels_from_examples`, a bootstrap) or, without it, from the scores
table's intervals (`panels_from_scores`, normal draws).

A *group* is one fine-tuning configuration evaluated one way: model x fine-tuning task x
learning rate x eval role x format x shots x metric (``GROUP``; with ``by_eval_set`` each
eval set of a role is a group of its own). Its value at a checkpoint
is the mean over the role's eval sets of each set's mean score (every set weighs the same,
as in the MRC tables), averaged over the fine-tune's seeds. A checkpoint missing one of
the group's eval sets is left out of the group (and named in the notes), so every
checkpoint is judged on the same sets.

Noise, two ways (``Panel.test``):

- ``bootstrap`` (per-example scores): `resample_means` draws each eval set's example
  indices once per resample and applies them to every checkpoint and every predictor of
  the group (paired), and, where a fine-tune has several seeds, draws the seeds of each
  checkpoint too (a two-level bootstrap: examples, then seeds). ``scipy.stats.bootstrap``
  (behind ``stats.paired_bootstrap``) resamples one level of equally long samples, so the
  stratified, two-level draw is written here; for one eval set and one seed it draws
  exactly what ``stats.paired_bootstrap`` draws (the same ``default_rng(seed)`` call), and
  a test checks that both give the same interval.
- ``normal`` (means with intervals only, e.g. the imported AMURO & CHAR release): the
  standard error of each cell is its interval's half-width over z; cells are independent
  (the release gives no pairing), and draws are normal. ``point`` when a cell has no
  interval (the release's official suite): no noise is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.mrc import PRIMARY

GROUP = ["model", "train_task", "lr", "role", "format", "shots", "metric"]
MAX_CELLS = 4_000_000
"""Resample x example counts held at once per eval set (the draws are chunked above)."""
TRUTH = "truth"
"""The series of the fine-tuned scores; every other series is a predictor."""


@dataclass
class Series:
    """One quantity per checkpoint: ``point`` (C,), ``draws`` (B, C) or None when the
    quantity has no known noise (the step), ``se`` (C,) on the normal path."""

    point: np.ndarray
    draws: np.ndarray | None = None
    se: np.ndarray | None = None


@dataclass
class Panel:
    """One group's checkpoints (``steps`` ascending) and its series (``truth`` first)."""

    key: dict
    steps: np.ndarray
    tokens: np.ndarray
    eval_sets: tuple[str, ...]
    test: str
    series: dict[str, Series]
    variants: dict[int, list[str]] = field(default_factory=dict)
    """Step -> the fine-tuned variants (seeds) behind the truth (for the compute saved)."""
    notes: list[str] = field(default_factory=list)

    @property
    def truth(self) -> Series:
        return self.series[TRUTH]


# ------------------------------------------------------------------ the bootstrap

def _chunks(n_boot: int, n: int) -> list[slice]:
    step = max(1, MAX_CELLS // max(1, n))
    return [slice(s, min(s + step, n_boot)) for s in range(0, n_boot, step)]


def resample_means(blocks: Sequence[Mapping[str, np.ndarray]], seed: int,
                   n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """(point (K,), draws (n_boot, K)) of K blocks' means.

    A block maps every eval set (the same sets in every block) to an array (S, n_e):
    S repetitions (seeds) x the set's n_e examples, aligned by example across blocks. The
    mean of a block is the mean over sets of the mean over seeds and examples. Each
    resample draws every set's example indices once (sets in sorted order) and uses them
    for all blocks, then the seeds of each block with S > 1 (blocks in order)."""
    sets = sorted(blocks[0])
    rng = np.random.default_rng(seed)
    sizes = [b[sets[0]].shape[0] for b in blocks]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    per_seed = np.zeros((offsets[-1], n_boot))  # rows: every block's seeds
    point_rows = np.zeros(offsets[-1])
    for e in sets:
        stack = np.vstack([np.asarray(b[e], dtype=float) for b in blocks])
        n = stack.shape[1]
        point_rows += stack.mean(axis=1) / len(sets)
        for sl in _chunks(n_boot, n):
            b = sl.stop - sl.start
            idx = rng.integers(0, n, (b, n))  # what scipy.stats.bootstrap draws
            # Counts of each example per resample: a resampled mean is a matrix product.
            counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(),
                                 minlength=b * n).reshape(b, n)
            per_seed[:, sl] += (stack @ counts.T.astype(float)) / n / len(sets)
    point = np.array([point_rows[offsets[k]:offsets[k + 1]].mean() for k in range(len(blocks))])
    draws = np.empty((n_boot, len(blocks)))
    for k, s in enumerate(sizes):
        rows = per_seed[offsets[k]:offsets[k + 1]]
        if s == 1:
            draws[:, k] = rows[0]
        else:
            pick = rng.integers(0, s, (n_boot, s))
            draws[:, k] = rows[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    return point, draws


# ------------------------------------------------------------------ from per-example scores

def _filter(df: pd.DataFrame, settings: AdvisorSettings) -> pd.DataFrame:
    sel = df["metric"].isin(PRIMARY) & df["role"].isin(settings.roles)
    if settings.formats is not None:
        sel &= df["format"].isin(settings.formats)
    if settings.shots is not None:
        sel &= df["shots"].isin(settings.shots)
    return df[sel]


def base_values(examples: pd.DataFrame) -> pd.DataFrame:
    """The base model's per-example few-shot scores as predictor rows (``base_fewshot``):
    model, step, eval_set, format, shots, metric, id, predictor, value."""
    b = examples[(examples["variant"] == "base") & examples["metric"].isin(PRIMARY)]
    out = b[["model", "step", "eval_set", "format", "shots", "metric", "id"]].copy()
    out["predictor"], out["value"] = "base_fewshot", b["score"].to_numpy(dtype=float)
    return out


def group_keys(settings: AdvisorSettings) -> list[str]:
    """``GROUP``, and the eval set with ``by_eval_set``."""
    return [*GROUP, "eval_set"] if settings.by_eval_set else list(GROUP)


def _key(values: Sequence, settings: AdvisorSettings) -> dict:
    key = dict(zip(group_keys(settings), values, strict=True))
    key["lr"] = float(key["lr"]) if pd.notna(key["lr"]) else float("nan")
    key["shots"] = int(key["shots"])
    return key


def _complete(g: pd.DataFrame, notes: list[str]) -> tuple[list[int], tuple[str, ...]]:
    """(steps, eval sets) judged alike: the sets every checkpoint has, all checkpoints;
    if no set is at every checkpoint, all sets and the checkpoints that have them all.
    What is left out is named in ``notes``."""
    have = {int(s): set(x) for s, x in g.groupby("step")["eval_set"]}
    every = set.intersection(*have.values())
    all_sets = set(g["eval_set"])
    if every:
        if every != all_sets:
            notes.append(f"eval sets {sorted(all_sets - every)} lack some checkpoints: "
                         f"left out")
        return sorted(have), tuple(sorted(every))
    keep = [s for s, sets in have.items() if all_sets <= sets]
    if len(keep) < len(have):
        notes.append(f"checkpoints {sorted(set(have) - set(keep))} lack some of "
                     f"{sorted(all_sets)}: left out")
    return sorted(keep), tuple(sorted(all_sets))


def _truth_blocks(g: pd.DataFrame, steps: list[int], eval_sets: Sequence[str]
                  ) -> tuple[list[dict], dict[str, list[str]], dict[int, list[str]]]:
    """Per step {eval set: (seeds, examples)} on the ids every variant of every step has."""
    ids, blocks = {}, [dict() for _ in steps]
    variants = {s: sorted(g.loc[g["step"] == s, "variant"].unique()) for s in steps}
    for e in eval_sets:
        ge = g[g["eval_set"] == e]
        wide = ge.pivot_table(index=["step", "variant"], columns="id", values="score",
                              aggfunc="first", dropna=False)
        wide = wide.loc[[(s, v) for s in steps for v in variants[s] if (s, v) in wide.index]]
        wide = wide.dropna(axis=1)  # an id any variant lacks is left out for all
        ids[e] = list(wide.columns)
        for i, s in enumerate(steps):
            blocks[i][e] = wide.loc[s].to_numpy(dtype=float)
    return blocks, ids, variants


def _predictor_blocks(pv: pd.DataFrame, steps: list[int], ids: Mapping[str, list[str]]
                      ) -> list[dict] | None:
    """Per step {eval set: (1, examples)} on the truth's ids; None if any is missing."""
    blocks = [dict() for _ in steps]
    for e, want in ids.items():
        wide = pv[pv["eval_set"] == e].pivot_table(index="step", columns="id", values="value",
                                                   aggfunc="mean")
        if not set(steps) <= set(wide.index) or not set(want) <= set(wide.columns):
            return None
        wide = wide.loc[steps, want]
        if wide.isna().any().any():
            return None
        for i in range(len(steps)):
            blocks[i][e] = wide.iloc[[i]].to_numpy(dtype=float)
    return blocks


def panels_from_examples(examples: pd.DataFrame, settings: AdvisorSettings,
                         extra: pd.DataFrame | None = None) -> list[Panel]:
    """One bootstrap `Panel` per group of the fine-tuned per-example scores, with the
    base few-shot predictor and ``extra`` per-example predictor rows (`base_values`'
    columns: the base log-probability, confidence, bits-per-byte predictors)."""
    ft = _filter(examples[examples["variant"] != "base"], settings)
    preds = base_values(examples)
    if extra is not None and not extra.empty:
        preds = pd.concat([preds, extra[preds.columns]], ignore_index=True)
    panels = []
    for values, g in ft.groupby(group_keys(settings), sort=True, dropna=False):
        key, notes = _key(values, settings), []
        steps, eval_sets = _complete(g, notes)
        if len(steps) < 2:
            continue
        g = g[g["eval_set"].isin(eval_sets)]
        blocks, ids, variants = _truth_blocks(g, steps, eval_sets)
        names, all_blocks = [TRUTH], [blocks]
        bshots = key["shots"] if settings.base_shots is None else settings.base_shots
        pv = preds[(preds["model"] == key["model"]) & (preds["format"] == key["format"])
                   & (preds["shots"] == bshots) & preds["eval_set"].isin(eval_sets)]
        for name, p in pv.groupby("predictor", sort=True):
            pb = _predictor_blocks(p, steps, ids)
            if pb is None:
                notes.append(f"{name}: not every checkpoint and example has it; left out")
                continue
            names.append(name)
            all_blocks.append(pb)
        point, draws = resample_means([b for bl in all_blocks for b in bl], settings.seed,
                                      settings.n_boot)
        c = len(steps)
        series = {n: Series(point[i * c:(i + 1) * c], draws[:, i * c:(i + 1) * c])
                  for i, n in enumerate(names)}
        tokens = g.groupby("step")["tokens"].first().reindex(steps).to_numpy(dtype=float)
        panels.append(Panel(key, np.array(steps), tokens, eval_sets, "bootstrap", series,
                            variants, notes))
    return panels


# ------------------------------------------------------------------ from intervals only

def _se(df: pd.DataFrame, ci_level: float) -> np.ndarray:
    z = norm.ppf(0.5 + ci_level / 2)
    return (df["ci_high"].to_numpy(dtype=float) - df["ci_low"].to_numpy(dtype=float)) / (2 * z)


def _combine_se(x: pd.Series) -> float:
    """Standard error of the mean of independent estimates (NaN if any is unknown)."""
    return float(np.sqrt((x ** 2).sum(skipna=False)) / len(x))


def normal_series(s: pd.DataFrame, steps: list[int], eval_sets: Sequence[str],
                   ci_level: float) -> Series | None:
    """Mean over sets (and seeds) per step, with the standard error of that mean from the
    cells' intervals (independent cells); None if a step lacks a set."""
    s = s.assign(se=_se(s, ci_level))
    # Seeds (variants) of one set first: their mean, se = sqrt(sum se^2) / S.
    per_set = s.groupby(["step", "eval_set"]).agg(
        value=("value", "mean"), se=("se", _combine_se))
    per_set = per_set.reset_index()
    if len(per_set) != len(steps) * len(eval_sets) or set(per_set["step"]) != set(steps):
        return None
    per_step = per_set.groupby("step").agg(
        value=("value", "mean"),
        se=("se", _combine_se)).loc[steps]
    return Series(per_step["value"].to_numpy(dtype=float), None,
                  per_step["se"].to_numpy(dtype=float))


def _draw(series: Series, rng: np.random.Generator, n_boot: int) -> None:
    """Normal draws around the point (in place); none where the noise is unknown."""
    if series.se is not None and np.isfinite(series.se).all():
        series.draws = rng.normal(series.point, series.se, (n_boot, series.point.size))


def panels_from_scores(scores: pd.DataFrame, settings: AdvisorSettings) -> list[Panel]:
    """One `Panel` per group of the scores table, noise from its intervals (``normal``;
    ``point`` where a cell has none), with the base few-shot predictor when the base was
    scored on the group's sets, format and shots at every checkpoint."""
    ft = _filter(scores[scores["variant"] != "base"], settings)
    base = scores[(scores["variant"] == "base") & scores["metric"].isin(PRIMARY)]
    panels = []
    for values, g in ft.groupby(group_keys(settings), sort=True, dropna=False):
        key, notes = _key(values, settings), []
        steps, eval_sets = _complete(g, notes)
        if len(steps) < 2:
            continue
        g = g[g["step"].isin(steps) & g["eval_set"].isin(eval_sets)]
        truth = normal_series(g, steps, eval_sets, settings.ci_level)
        series = {TRUTH: truth}
        bshots = key["shots"] if settings.base_shots is None else settings.base_shots
        b = base[(base["model"] == key["model"]) & (base["format"] == key["format"])
                 & (base["shots"] == bshots) & base["eval_set"].isin(eval_sets)
                 & (base["metric"] == key["metric"]) & base["step"].isin(steps)]
        few = normal_series(b, steps, eval_sets, settings.ci_level) if len(b) else None
        if few is not None:
            series["base_fewshot"] = few
        else:
            notes.append("base_fewshot: the base was not scored on every checkpoint and set")
        test = "normal" if np.isfinite(truth.se).all() else "point"
        rng = np.random.default_rng(settings.seed)
        for s in series.values():
            _draw(s, rng, settings.n_boot)
        variants = {int(s): sorted(g.loc[g["step"] == s, "variant"].unique()) for s in steps}
        tokens = g.groupby("step")["tokens"].first().reindex(steps).to_numpy(dtype=float)
        panels.append(Panel(key, np.array(steps), tokens, eval_sets, test, series, variants,
                            notes))
    return panels

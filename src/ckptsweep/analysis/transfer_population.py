"""The cross-stage transfer population's data: per-example values from the saved choice
log-likelihoods, loaded per member, stage and benchmark (`load_examples`), held as aligned
members x examples arrays (`Population`), and the rank correlations between two rankings of
the members with their bootstrap intervals (`correlate`). The tables built on them are in
``transfer_tables``.

Every random draw comes from ``numpy.random.default_rng`` seeded with the configured seed
and a stable key of the cell, so the same inputs and seed give the same numbers, whatever
else is computed. Plain numpy for the resampling (thousands of small correlations), scipy
only for ranks.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ckptsweep.analysis.settings import ALPHA, N_BOOT

METRICS = ("accuracy", "confidence", "gold_prob", "ece", "brier")
"""Per member, benchmark and stage. All but ``ece`` are means of a per-example value."""
PER_EXAMPLE = ("accuracy", "confidence", "gold_prob", "brier")
ALL = "all"
"""The scale (or category) label of pooled rows."""
MAX_CELLS = 4_000_000
"""Resampled values held at once (members x resamples x examples) in the example bootstrap."""


# ------------------------------------------------------------------ correlations

def _ranks(x: np.ndarray) -> np.ndarray:
    return rankdata(x, axis=-1, method="average")


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=-1) / den
    # A constant side has no ranking: NaN, not a spurious 0.
    return np.where(den > 1e-12, np.clip(r, -1.0, 1.0), np.nan)


def spearman(x, y) -> np.ndarray | float:
    """Spearman's rho along the last axis (ties get average ranks; NaN when either side is
    constant). Rows of a 2-d input are independent samples (bootstrap resamples)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    r = _pearson(_ranks(x), _ranks(y))
    return float(r) if r.ndim == 0 else r


def kendall(x, y) -> np.ndarray | float:
    """Kendall's tau-b along the last axis: (concordant - discordant) over the square root
    of the pairs untied in x times those untied in y (scipy's default variant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(x.shape[-1], 1)
    dx = np.sign(x[..., i] - x[..., j])
    dy = np.sign(y[..., i] - y[..., j])
    den = np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (dx * dy).sum(axis=-1) / den
    t = np.where(den > 0, t, np.nan)
    return float(t) if t.ndim == 0 else t


CORRELATIONS = {"spearman": spearman, "kendall": kendall}


def cell_rng(seed: int, *key) -> np.random.Generator:
    """A generator for one cell, from the seed and a stable key (not Python's hash)."""
    return np.random.default_rng([int(seed), zlib.crc32(json.dumps(key).encode())])


def percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The percentile interval of the resampled values, NaNs left out (NaN, NaN if none)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


# ------------------------------------------------------------------ per-example values

def choice_probs(logprobs: Sequence[float]) -> np.ndarray:
    """Choice log-likelihoods -> probabilities normalised over the choices (softmax)."""
    lp = np.asarray(logprobs, dtype=float)
    p = np.exp(lp - lp.max())
    return p / p.sum()


def example_values(logprobs: Sequence[Sequence[float]], gold: Sequence[int]) -> pd.DataFrame:
    """Per example: correct (argmax == gold), confidence (max probability), gold_prob and
    the multi-class Brier score."""
    rows = []
    for lps, g in zip(logprobs, gold, strict=True):
        p = choice_probs(lps)
        k = int(np.argmax(lps))
        y = np.zeros_like(p)
        y[int(g)] = 1.0
        rows.append((float(k == g), float(p[k]), float(p[int(g)]), float(((p - y) ** 2).sum())))
    return pd.DataFrame(rows, columns=["accuracy", "confidence", "gold_prob", "brier"])


def ece(confidence, correct, bins: int = 10) -> np.ndarray | float:
    """Expected calibration error along the last axis: equal-width confidence bins on
    [0, 1] (a confidence of exactly 1 falls in the last bin), sum over bins of
    |sum(correct) - sum(confidence)| / n, i.e. the share-weighted |accuracy - confidence|."""
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    lead = conf.shape[:-1]
    cells = int(np.prod(lead, dtype=int))
    # One bincount over (row, bin) cells: the sum of correct - confidence per bin and row.
    flat = (np.arange(cells).reshape(*lead, 1) * bins + idx).ravel()
    sums = np.bincount(flat, weights=(corr - conf).ravel(), minlength=cells * bins)
    out = np.abs(sums.reshape(*lead, bins)).sum(axis=-1) / conf.shape[-1]
    return float(out) if out.ndim == 0 else out


def reliability(confidence, correct, bins: int = 10) -> pd.DataFrame:
    """The reliability diagram's bins: n, mean confidence and accuracy per bin."""
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        rows.append({"bin": b, "bin_low": b / bins, "bin_high": (b + 1) / bins, "n": n,
                     "confidence": float(conf[m].mean()) if n else np.nan,
                     "accuracy": float(corr[m].mean()) if n else np.nan})
    return pd.DataFrame(rows)


def metric_values(name: str, values: Mapping[str, np.ndarray], bins: int) -> np.ndarray:
    """One metric along the last axis of per-example arrays (``accuracy`` = correct)."""
    if name == "ece":
        return ece(values["confidence"], values["accuracy"], bins)
    return np.asarray(values[name]).mean(axis=-1)


# ------------------------------------------------------------------ loading

def gold_indices(test_paths: Mapping[str, str | Path]) -> dict[tuple[str, str], int]:
    """(eval set, example id) -> gold choice index, from the canonical test files (the
    predictions keep the gold *text* only)."""
    out = {}
    for name, path in test_paths.items():
        with open(path) as fh:
            for line in fh:
                rec = json.loads(line)
                out[(name, rec["id"])] = int(rec["label"])
    return out


def load_examples(runs: Sequence[Mapping], categories: Mapping[str, str],
                  gold: Mapping[tuple[str, str], int], shots: int,
                  fmt: str = "default") -> pd.DataFrame:
    """One row per (member, stage, benchmark, example) with the per-example values.

    ``runs``: predictions files with member, model, step, mixture, scale, stage, variant,
    path (``transfer_config.runs``). Several post-SFT variants of a member (seeds) are
    averaged per example (``accuracy`` is then a share)."""
    keys = ["member", "model", "step", "mixture", "scale", "stage"]
    frames = []
    for run in runs:
        df = pd.read_parquet(run["path"], columns=["eval_set", "format", "shots", "id",
                                                   "label_logprobs"])
        df = df[df["eval_set"].isin(list(categories)) & (df["format"] == fmt)
                & (df["shots"] == shots)]
        missing = sorted(set(categories) - set(df["eval_set"]))
        if missing:
            raise ValueError(f"{run['path']}: no {fmt} {shots}-shot rows for {missing}")
        g = [gold[(e, i)] for e, i in zip(df["eval_set"], df["id"], strict=True)]
        vals = example_values(list(df["label_logprobs"]), g)
        vals.insert(0, "id", df["id"].to_numpy())
        vals.insert(0, "eval_set", df["eval_set"].to_numpy())
        for k in reversed(keys):
            vals.insert(0, k, run[k])
        frames.append(vals)
    ex = pd.concat(frames, ignore_index=True)
    ex = ex.groupby([*keys, "eval_set", "id"], sort=False, as_index=False)[
        list(PER_EXAMPLE)].mean()
    ex.insert(ex.columns.get_loc("eval_set") + 1, "category", ex["eval_set"].map(categories))
    return ex


# ------------------------------------------------------------------ population arrays

class Population:
    """Per-example arrays of one population: members x examples, per benchmark and stage,
    aligned (examples sorted by id; every member must have the same examples)."""

    def __init__(self, ex: pd.DataFrame, scales: Sequence[str], bins: int):
        self.bins = bins
        self.scales = list(scales)
        mem = ex.drop_duplicates("member")[["member", "model", "step", "mixture", "scale"]]
        mem = mem.assign(_s=mem["scale"].map({s: i for i, s in enumerate(self.scales)}))
        self.members = mem.sort_values(["_s", "model", "step"], kind="stable").drop(
            columns="_s").reset_index(drop=True)
        self.order = {m: i for i, m in enumerate(self.members["member"])}
        self.benchmarks = list(dict.fromkeys(ex["eval_set"]))
        self.category = dict(zip(ex["eval_set"], ex["category"], strict=False))
        self.values: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for (stage, bench), g in ex.groupby(["stage", "eval_set"], sort=False):
            wide = {k: g.pivot(index="member", columns="id", values=k) for k in PER_EXAMPLE}
            ref = wide["accuracy"]
            if ref.isna().any().any() or len(ref) != len(self.order):
                raise ValueError(f"{bench} ({stage}): every member needs the same examples; "
                                 f"{len(ref)} of {len(self.order)} members, "
                                 f"{int(ref.isna().sum().sum())} missing values")
            self.values[(stage, bench)] = {
                k: w.loc[list(self.order)].sort_index(axis=1).to_numpy() for k, w in wide.items()}

    def select(self, scale: str) -> np.ndarray:
        if scale == ALL:
            return np.arange(len(self.members))
        return np.flatnonzero(self.members["scale"].to_numpy() == scale)

    def score(self, stage: str, benchmarks: Sequence[str], metric: str,
              rows: np.ndarray | None = None, ex_idx: Mapping[str, np.ndarray] | None = None
              ) -> np.ndarray:
        """Members' metric, averaged over ``benchmarks``: shape (members,), or
        (members, resamples) with ``ex_idx`` (benchmark -> resampled example indices)."""
        total = 0.0
        need = ("confidence", "accuracy") if metric == "ece" else (metric,)
        for b in benchmarks:
            v = {k: self.values[(stage, b)][k] for k in need}
            if rows is not None:
                v = {k: a[rows] for k, a in v.items()}
            if ex_idx is not None:
                v = {k: a[:, ex_idx[b]] for k, a in v.items()}
            total = total + metric_values(metric, v, self.bins)
        return total / len(benchmarks)


def _chunks(n_boot: int, cells_per_resample: int) -> list[slice]:
    step = max(1, MAX_CELLS // max(1, cells_per_resample))
    return [slice(s, min(s + step, n_boot)) for s in range(0, n_boot, step)]


def correlate(pop: Population, benchmarks: Sequence[str], scale: str, metric: str,
              stages: tuple[str, str] = ("pre", "post"), metric_b: str | None = None,
              benchmarks_b: Sequence[str] | None = None, seed: int = 0,
              n_boot: int = N_BOOT, alpha: float = ALPHA, examples: bool = True) -> dict:
    """Spearman and Kendall between two rankings of the members of ``scale``: by ``metric``
    on ``benchmarks`` at ``stages[0]`` and by ``metric_b`` (default the same) on
    ``benchmarks_b`` (default the same) at ``stages[1]``; with percentile intervals from
    resampling members (``*_model_low/high``) and, when ``examples``, from resampling the
    examples of each benchmark (``*_example_low/high``; the same indices for every member
    and both sides)."""
    metric_b = metric_b or metric
    benchmarks_b = list(benchmarks_b or benchmarks)
    rows = pop.select(scale)
    key = (list(benchmarks), benchmarks_b, scale, metric, metric_b, list(stages))
    a = pop.score(stages[0], benchmarks, metric, rows)
    b = pop.score(stages[1], benchmarks_b, metric_b, rows)
    out: dict = {"n_members": int(rows.size)}
    pick = cell_rng(seed, "members", *key).integers(0, rows.size, (n_boot, rows.size))
    for name, fn in CORRELATIONS.items():
        out[name] = fn(a, b)
        out[f"{name}_model_low"], out[f"{name}_model_high"] = percentile_interval(
            fn(a[pick], b[pick]), alpha)
    if examples:
        rng = cell_rng(seed, "examples", *key)
        used = list(dict.fromkeys([*benchmarks, *benchmarks_b]))
        n_ex = {bn: pop.values[(stages[0], bn)]["accuracy"].shape[1] for bn in used}
        idx = {bn: rng.integers(0, n, (n_boot, n)) for bn, n in n_ex.items()}
        boots = {name: [] for name in CORRELATIONS}
        for sl in _chunks(n_boot, rows.size * sum(n_ex.values())):
            part = {bn: i[sl] for bn, i in idx.items()}
            ra = pop.score(stages[0], benchmarks, metric, rows, part).T  # resamples x members
            rb = pop.score(stages[1], benchmarks_b, metric_b, rows, part).T
            for name, fn in CORRELATIONS.items():
                boots[name].append(fn(ra, rb))
        for name in CORRELATIONS:
            out[f"{name}_example_low"], out[f"{name}_example_high"] = percentile_interval(
                np.concatenate(boots[name]), alpha)
    return out

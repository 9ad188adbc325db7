"""Cross-stage transfer: do accuracy and confidence rankings survive SFT? (Fan et al., 2026)

Over a population of models (pre-training mixture x scale, several checkpoints each),
every member is evaluated before SFT (``pre``) and after (``post``) on multiple-choice
benchmarks whose per-choice log-likelihoods the evaluation saves. From those:

- **metrics** per member, benchmark and stage (`member_metrics`): accuracy; confidence =
  mean probability of the predicted choice; ``gold_prob`` = mean probability of the gold
  choice (probabilities are the choices' likelihoods normalised over the choices); ECE with
  equal-width confidence bins; multi-class Brier score (sum over choices of (p - y)^2, so
  0 is perfect and 2 the worst).
- **protocols**: Spearman and Kendall (tau-b) correlation between the pre- and post-SFT
  values of the population, per benchmark, per category (a member's category value is the
  mean over the category's benchmarks) and per scale (and all scales pooled), each with
  two percentile bootstrap intervals: resampling members, and, separately, resampling the
  examples within each benchmark (the same example indices for every member and both
  stages, so the resample is paired); a ranking of benchmarks by that correlation;
  agreement between benchmarks (within and across categories); the accuracy-confidence
  relationship per stage; differences between scales.

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

from ckptsweep.analysis.names import TRANSFER_TABLES
from ckptsweep.analysis.stats import ALPHA, N_BOOT
from ckptsweep.files import atomic_write

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


def _rng(seed: int, *key) -> np.random.Generator:
    """A generator for one cell, from the seed and a stable key (not Python's hash)."""
    return np.random.default_rng([int(seed), zlib.crc32(json.dumps(key).encode())])


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
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


def _metric(name: str, values: Mapping[str, np.ndarray], bins: int) -> np.ndarray:
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
            total = total + _metric(metric, v, self.bins)
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
    pick = _rng(seed, "members", *key).integers(0, rows.size, (n_boot, rows.size))
    for name, fn in CORRELATIONS.items():
        out[name] = fn(a, b)
        out[f"{name}_model_low"], out[f"{name}_model_high"] = _interval(
            fn(a[pick], b[pick]), alpha)
    if examples:
        rng = _rng(seed, "examples", *key)
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
            out[f"{name}_example_low"], out[f"{name}_example_high"] = _interval(
                np.concatenate(boots[name]), alpha)
    return out


# ------------------------------------------------------------------ tables

def member_metrics(pop: Population) -> pd.DataFrame:
    """Every metric per member, benchmark and stage (the population's raw table)."""
    rows = []
    for (stage, bench), v in pop.values.items():
        vals = {m: _metric(m, v, pop.bins) for m in METRICS}
        for i, mem in pop.members.iterrows():
            rows.append({**mem.to_dict(), "stage": stage, "eval_set": bench,
                         "category": pop.category[bench], "n": v["accuracy"].shape[1],
                         **{m: float(vals[m][i]) for m in METRICS}})
    df = pd.DataFrame(rows)
    df["_st"] = df["stage"].map({"pre": 0, "post": 1})
    df["_m"] = df["member"].map(pop.order)
    df["_b"] = df["eval_set"].map({b: i for i, b in enumerate(pop.benchmarks)})
    return df.sort_values(["_b", "_st", "_m"]).drop(columns=["_st", "_m", "_b"]).reset_index(
        drop=True)


def _units(pop: Population) -> list[tuple[str, str, list[str]]]:
    """(unit type, name, benchmarks): each benchmark, each category, then all benchmarks."""
    units = [("benchmark", b, [b]) for b in pop.benchmarks]
    cats = list(dict.fromkeys(pop.category[b] for b in pop.benchmarks))
    units += [("category", c, [b for b in pop.benchmarks if pop.category[b] == c])
              for c in cats]
    units.append(("all", ALL, list(pop.benchmarks)))
    return units


def spread_and_noise(pop: Population, benchmarks: Sequence[str], scale: str, metric: str,
                     stage: str = "pre") -> tuple[float, float]:
    """How far apart the members are (SD of their values) against how far apart sampling
    alone would put them (the mean standard error of one member's value over the
    examples). A spread not well above the noise means the ranking is mostly noise, and
    noise that the same examples carry into both stages can still correlate."""
    rows = pop.select(scale)
    spread = float(np.std(pop.score(stage, benchmarks, metric, rows), ddof=1))
    if metric not in PER_EXAMPLE:
        return spread, float("nan")
    se = np.mean([pop.values[(stage, b)][metric][rows].std(axis=-1, ddof=1).mean()
                  / np.sqrt(pop.values[(stage, b)][metric].shape[1]) for b in benchmarks])
    return spread, float(se / np.sqrt(len(benchmarks)))


def cross_stage(pop: Population, metrics: Sequence[str], seed: int, n_boot: int,
                alpha: float) -> pd.DataFrame:
    """Pre- vs post-SFT rank correlation per unit (benchmark, category, all), scale (each
    and pooled) and metric, with the pre-SFT spread and noise (`spread_and_noise`)."""
    rows = []
    for kind, unit, benches in _units(pop):
        for scale in [*pop.scales, ALL]:
            for metric in metrics:
                spread, noise = spread_and_noise(pop, benches, scale, metric)
                rows.append({"unit_type": kind, "unit": unit,
                             "category": pop.category[unit] if kind == "benchmark" else "",
                             "scale": scale, "metric": metric,
                             **correlate(pop, benches, scale, metric, seed=seed,
                                         n_boot=n_boot, alpha=alpha),
                             "spread_pre": spread, "noise_pre": noise})
    return pd.DataFrame(rows)


def benchmark_ranking(corr: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "confidence")
                      ) -> pd.DataFrame:
    """Benchmarks ranked by how well their pre-SFT ranking predicts the post-SFT one
    (Spearman, highest first) per scale and metric; ``reliable`` when the whole
    member-resampling interval lies above 0."""
    b = corr[(corr["unit_type"] == "benchmark") & corr["metric"].isin(list(metrics))].copy()
    b["_s"] = b["scale"].map({s: i for i, s in enumerate(dict.fromkeys(b["scale"]))})
    b["_m"] = b["metric"].map({m: i for i, m in enumerate(metrics)})
    b = b.sort_values(["_m", "_s", "spearman", "unit"], ascending=[True, True, False, True],
                      na_position="last")
    b["rank"] = b.groupby(["metric", "scale"]).cumcount() + 1
    b["reliable"] = b["spearman_model_low"] > 0
    cols = ["metric", "scale", "rank", "unit", "category", "n_members", "spearman",
            "spearman_model_low", "spearman_model_high", "spearman_example_low",
            "spearman_example_high", "kendall", "reliable"]
    return b[cols].rename(columns={"unit": "eval_set"}).reset_index(drop=True)


def agreement(pop: Population, seed: int, n_boot: int, alpha: float,
              metric: str = "accuracy") -> pd.DataFrame:
    """Agreement between two benchmarks' rankings of the same members, per stage and
    scale; ``within`` marks pairs of the same category (intervals resample members)."""
    rows = []
    for i, a in enumerate(pop.benchmarks):
        for b in pop.benchmarks[i + 1:]:
            for stage in ("pre", "post"):
                for scale in [*pop.scales, ALL]:
                    r = correlate(pop, [a], scale, metric, stages=(stage, stage),
                                  benchmarks_b=[b], seed=seed, n_boot=n_boot, alpha=alpha,
                                  examples=False)
                    rows.append({"stage": stage, "scale": scale, "metric": metric,
                                 "eval_set_a": a, "eval_set_b": b,
                                 "category_a": pop.category[a], "category_b": pop.category[b],
                                 "within": pop.category[a] == pop.category[b], **r})
    cols = ["stage", "scale", "metric", "eval_set_a", "eval_set_b", "category_a",
            "category_b", "within", "n_members", "spearman", "spearman_model_low",
            "spearman_model_high", "kendall", "kendall_model_low", "kendall_model_high"]
    return pd.DataFrame(rows, columns=cols)


def calibration(pop: Population, metrics_df: pd.DataFrame, seed: int, n_boot: int,
                alpha: float) -> pd.DataFrame:
    """Per benchmark, scale and stage: population means of accuracy, confidence, ECE and
    Brier, and the accuracy-confidence rank correlation across members (do the more
    accurate members also say so?) with member-resampling intervals."""
    rows = []
    for bench in pop.benchmarks:
        for scale in [*pop.scales, ALL]:
            for stage in ("pre", "post"):
                m = metrics_df[(metrics_df["eval_set"] == bench) & (metrics_df["stage"] == stage)]
                if scale != ALL:
                    m = m[m["scale"] == scale]
                r = correlate(pop, [bench], scale, "accuracy", stages=(stage, stage),
                              metric_b="confidence", seed=seed, n_boot=n_boot, alpha=alpha,
                              examples=False)
                rows.append({"eval_set": bench, "category": pop.category[bench],
                             "scale": scale, "stage": stage, "n_members": len(m),
                             **{k: float(m[k].mean()) for k in METRICS},
                             "overconfidence": float((m["confidence"] - m["accuracy"]).mean()),
                             "acc_conf_spearman": r["spearman"],
                             "acc_conf_spearman_low": r["spearman_model_low"],
                             "acc_conf_spearman_high": r["spearman_model_high"]})
    return pd.DataFrame(rows)


def scale_differences(pop: Population, metrics: Sequence[str], seed: int, n_boot: int,
                      alpha: float) -> pd.DataFrame:
    """Cross-stage Spearman of each larger scale minus the smallest, per unit and metric,
    with an interval from resampling members within each scale independently."""
    rows = []
    if len(pop.scales) < 2:
        return pd.DataFrame(rows)
    small = pop.scales[0]
    for kind, unit, benches in _units(pop):
        for metric in metrics:
            boots, points = {}, {}
            for scale in pop.scales:
                sel = pop.select(scale)
                a = pop.score("pre", benches, metric, sel)
                b = pop.score("post", benches, metric, sel)
                pick = _rng(seed, "scales", unit, scale, metric).integers(
                    0, sel.size, (n_boot, sel.size))
                points[scale] = spearman(a, b)
                boots[scale] = spearman(a[pick], b[pick])
            for scale in pop.scales[1:]:
                lo, hi = _interval(boots[scale] - boots[small], alpha)
                rows.append({"unit_type": kind, "unit": unit, "metric": metric,
                             "scale_a": small, "scale_b": scale,
                             "spearman_a": points[small], "spearman_b": points[scale],
                             "diff": points[scale] - points[small], "diff_low": lo,
                             "diff_high": hi})
    return pd.DataFrame(rows)


def reliability_table(ex: pd.DataFrame, bins: int, scales: Sequence[str]) -> pd.DataFrame:
    """Reliability-diagram bins per benchmark, scale and stage, pooling the members."""
    frames = []
    for bench in dict.fromkeys(ex["eval_set"]):
        for scale in [*scales, ALL]:
            for stage in ("pre", "post"):
                g = ex[(ex["eval_set"] == bench) & (ex["stage"] == stage)]
                if scale != ALL:
                    g = g[g["scale"] == scale]
                r = reliability(g["confidence"], g["accuracy"], bins)
                frames.append(r.assign(eval_set=bench, scale=scale, stage=stage))
    df = pd.concat(frames, ignore_index=True)
    return df[["eval_set", "scale", "stage", "bin", "bin_low", "bin_high", "n", "confidence",
               "accuracy"]]


def analyse(ex: pd.DataFrame, settings: Mapping) -> dict[str, pd.DataFrame]:
    """Every transfer table from the per-example frame (`load_examples`)."""
    bins, seed = int(settings["ece_bins"]), int(settings["seed"])
    n_boot, alpha = int(settings["n_boot"]), float(settings["alpha"])
    scales = list(settings.get("scales") or dict.fromkeys(ex["scale"]))
    pop = Population(ex, scales, bins)
    metrics = member_metrics(pop)
    corr = cross_stage(pop, METRICS, seed, n_boot, alpha)
    return {"transfer_metrics": metrics, "transfer_correlation": corr,
            "transfer_benchmarks": benchmark_ranking(corr),
            "transfer_agreement": agreement(pop, seed, n_boot, alpha),
            "transfer_calibration": calibration(pop, metrics, seed, n_boot, alpha),
            "transfer_scales": scale_differences(pop, METRICS, seed, n_boot, alpha),
            "transfer_reliability": reliability_table(ex, bins, scales)}


def summary(tables: Mapping[str, pd.DataFrame], settings: Mapping) -> dict:
    """Headline numbers: population, accuracy/confidence transfer per benchmark and scale,
    the most and least predictive benchmark per scale, calibration before and after."""
    m = tables["transfer_metrics"]
    corr = tables["transfer_correlation"]
    pop = m.drop_duplicates("member")

    def cell(r) -> dict:
        return {k: (None if pd.isna(r[k]) else round(float(r[k]), 4)) for k in
                ("spearman", "spearman_model_low", "spearman_model_high",
                 "spearman_example_low", "spearman_example_high", "kendall")}

    out: dict = {
        "members": int(len(pop)),
        "members_per_scale": {str(k): int(v) for k, v in pop.groupby("scale").size().items()},
        "mixtures": sorted(pop["mixture"].unique().tolist()),
        "settings": {k: settings[k] for k in ("shots", "format", "ece_bins", "n_boot", "seed")},
        "cross_stage": {},
        "ranking": {},
        "calibration": {},
    }
    for metric in ("accuracy", "confidence"):
        sub = corr[corr["metric"] == metric]
        out["cross_stage"][metric] = {
            f"{r.unit_type}:{r.unit}": {} for r in sub.itertuples()}
        for _, r in sub.iterrows():
            out["cross_stage"][metric][f"{r['unit_type']}:{r['unit']}"][str(r["scale"])] = cell(r)
    rank = tables["transfer_benchmarks"]
    for (metric, scale), g in rank.groupby(["metric", "scale"], sort=False):
        g = g.dropna(subset=["spearman"])
        out["ranking"].setdefault(metric, {})[str(scale)] = g["eval_set"].tolist()
    cal = tables["transfer_calibration"]
    for (bench, scale, stage), g in cal.groupby(["eval_set", "scale", "stage"], sort=False):
        r = g.iloc[0]
        out["calibration"].setdefault(bench, {}).setdefault(str(scale), {})[stage] = {
            k: round(float(r[k]), 4) for k in ("accuracy", "confidence", "ece", "brier")}
    return out


def _write_table(out: Path, name: str, df: pd.DataFrame) -> list[Path]:
    return [atomic_write(out / f"{name}.csv", lambda p: df.to_csv(p, index=False)),
            atomic_write(out / f"{name}.html", lambda p: df.to_html(
                p, index=False, float_format=lambda x: f"{x:.4f}", na_rep="", border=0))]


def write_tables(tables: Mapping[str, pd.DataFrame], settings: Mapping, out: str | Path
                 ) -> list[Path]:
    """``{name}.csv`` + ``.html`` for every table and ``transfer_summary.json`` in ``out``."""
    out = Path(out)
    paths = []
    for name in TRANSFER_TABLES:
        paths += _write_table(out, name, tables[name])
    text = json.dumps(summary(tables, settings), indent=1, sort_keys=False) + "\n"
    paths.append(atomic_write(out / "transfer_summary.json", lambda p: p.write_text(text)))
    return paths

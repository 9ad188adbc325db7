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

The per-example values, the population's arrays and the correlations with their intervals
are in ``transfer_population``; this module builds the tables, the summary and the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ckptsweep.analysis.names import TRANSFER_TABLES
from ckptsweep.analysis.tables import write_table
from ckptsweep.analysis.transfer_population import (
    ALL,
    METRICS,
    PER_EXAMPLE,
    Population,
    cell_rng,
    correlate,
    metric_values,
    percentile_interval,
    reliability,
    spearman,
)
from ckptsweep.files import atomic_write


def member_metrics(pop: Population) -> pd.DataFrame:
    """Every metric per member, benchmark and stage (the population's raw table)."""
    rows = []
    for (stage, bench), v in pop.values.items():
        vals = {m: metric_values(m, v, pop.bins) for m in METRICS}
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
                pick = cell_rng(seed, "scales", unit, scale, metric).integers(
                    0, sel.size, (n_boot, sel.size))
                points[scale] = spearman(a, b)
                boots[scale] = spearman(a[pick], b[pick])
            for scale in pop.scales[1:]:
                lo, hi = percentile_interval(boots[scale] - boots[small], alpha)
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


def write_tables(tables: Mapping[str, pd.DataFrame], settings: Mapping, out: str | Path
                 ) -> list[Path]:
    """``{name}.csv`` + ``.html`` for every table and ``transfer_summary.json`` in ``out``."""
    out = Path(out)
    paths = []
    for name in TRANSFER_TABLES:
        paths += write_table(out, name, tables[name])
    text = json.dumps(summary(tables, settings), indent=1, sort_keys=False) + "\n"
    paths.append(atomic_write(out / "transfer_summary.json", lambda p: p.write_text(text)))
    return paths

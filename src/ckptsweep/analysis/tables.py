"""Every analysis table of the AMURO & CHAR study, from the scores and examples tables.

Conventions shared by all tables:

- Base and fine-tuned models are compared at the same checkpoint, eval set, prompt format
  and shot count (``analysis_cfg["shots"]``; format ``analysis_cfg["format"]`` unless the
  table is about formats). Only the primary metric is used (accuracy or ROUGE-L F1; the
  multiple-choice ``accuracy_norm`` rows stay in the scores table for reference).
- Every table carries a ``model`` column, so a study with several model families or
  scales gets one set of rows per model instead of pooling them.
- Ratios (ft - base) / base are undefined when the base is ~0: pairs with base below
  ``min_base`` are skipped and counted in ``n_skipped``; raw differences keep them.
- Roles come from the scores table: an eval set is "the in-domain set of task t" when some
  fine-tune of t has role "id" on it, so no extra config is needed here. A config may
  instead name the cross-task pairs explicitly (``analysis_cfg["cross_task"]``).
- A pair ``{"eval": E, "train": T}`` (groups, cross-task) may also carry ``shots``,
  ``format`` and ``lr``, overriding the table's defaults for that pair only (for example
  benchmarks scored 0-shot next to 4-shot SFT sets). Each listed pair contributes its own
  units: a pair listed twice in a group is counted twice (documented where used).
- Without the per-example table (an imported scores file) the tables that need it
  (``EXAMPLE_TABLES``) are skipped; the others come from the scores table alone.
- Intervals are seeded percentile bootstraps (``stats``); ``value``/``mrc``/``margin``
  columns hold the statistic on the full data, never an interval midpoint.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ckptsweep.analysis import stats
from ckptsweep.analysis.names import ABLATION_METHODS, EXTRA_TABLES, TABLE_NAMES
from ckptsweep.files import atomic_write

PRIMARY = ("accuracy", "rouge_l")
CELL = ["model", "step", "eval_set", "format", "shots", "metric"]
"""A (checkpoint, eval set, format, shots, metric) cell: base and fine-tuned meet on it."""
FT_CONFIG = ["model", "train_task", "train_kind", "lr"]
"""A fine-tuning configuration; its seeds are averaged where a table says so."""
DIRECTIONS = {"classification->generation": ("classification", "generation"),
              "generation->classification": ("generation", "classification")}
GPUS_PER_JOB = {"pretrain": 1, "finetune": 1, "evaluate": 1, "ablation": 1}
"""Default GPUs per job of a rule for ``gpu_hours`` (any other rule: 0)."""
PER_MODEL_RULES = ("pretrain", "checkpoints", "prefetch_model", "finetune", "evaluate",
                   "ablation")
"""Rules whose benchmark files are ``{rule}/{model}...``: filtered by ``analysis.models``."""
ROUGE_CORRECT = 0.5
"""For forgetting counts a ROUGE-L example counts as correct when its score is >= 0.5."""


def _settings(cfg: Mapping) -> dict:
    """The analysis_cfg keys this module reads, with the defaults of the paper's protocol."""
    return {"shots": int(cfg["shots"]), "format": cfg.get("format", "default"),
            "seed": int(cfg.get("seed", 0)), "n_boot": int(cfg.get("n_boot", stats.N_BOOT)),
            "alpha": float(cfg.get("alpha", stats.ALPHA)),
            "groups": dict(cfg.get("groups") or {}),
            "rise_threshold": float(cfg.get("rise_threshold", 0.0)),
            "min_base": float(cfg.get("min_base", 0.01)),
            "cross_task": dict(cfg.get("cross_task") or {}),
            "gpus_per_job": dict(cfg.get("gpus_per_job") or GPUS_PER_JOB),
            # Filled by the workflow (study.finetune_gpus), not a config key: the GPUs of
            # each multi-GPU fine-tune, which the rule-wide gpus_per_job would undercount.
            "finetune_gpus": dict(cfg.get("finetune_gpus") or {}),
            "models": list(cfg.get("models") or []),
            "notes": dict(cfg.get("notes") or {})}


def _boot(cfg: dict) -> dict:
    return {"seed": cfg["seed"], "n_boot": cfg["n_boot"], "alpha": cfg["alpha"]}


# ---------------------------------------------------------------- fine-tuned vs base cells

def paired_changes(scores: pd.DataFrame, shots: int | None, fmt: str | None,
                   min_base: float) -> pd.DataFrame:
    """One row per fine-tuned cell with its base: base, ft, diff = ft - base, ratio.

    ``fmt=None`` keeps every format and ``shots=None`` every shot count (base and
    fine-tuned still meet in the same format and shots).
    ``ratio`` is NaN and ``skipped`` True where base < min_base."""
    sel = scores["metric"].isin(PRIMARY)
    if shots is not None:
        sel &= scores["shots"] == shots
    if fmt is not None:
        sel &= scores["format"] == fmt
    s = scores[sel]
    base = s.loc[s["variant"] == "base", [*CELL, "value"]].rename(columns={"value": "base"})
    ft = s[s["variant"] != "base"].drop(columns=["ci_low", "ci_high"])
    out = ft.merge(base, on=CELL, how="inner", validate="many_to_one")
    out = out.rename(columns={"value": "ft"})
    out["diff"] = out["ft"] - out["base"]
    out["skipped"] = out["base"] < min_base
    out["ratio"] = (out["diff"] / out["base"]).where(~out["skipped"])
    return out.reset_index(drop=True)


def in_domain_owner_kind(changes: pd.DataFrame) -> pd.Series:
    """eval_set -> train_kind of the task whose in-domain set it is (from role "id" rows)."""
    owners = changes.loc[changes["role"] == "id", ["eval_set", "train_kind"]]
    return owners.drop_duplicates("eval_set").set_index("eval_set")["train_kind"]


def mrc_stats(units: pd.DataFrame, seed: int, n_boot: int, alpha: float) -> dict:
    """MRC of a set of (checkpoint, pair) units: mean ratio, bootstrap interval over the
    units, two-sided one-sample t-test p-value against 0 (scipy.stats.ttest_1samp)."""
    ratios = units["ratio"].dropna().to_numpy()
    mean, low, high = stats.bootstrap_ci(ratios, seed, n_boot, alpha)
    return {"n": int(ratios.size), "mrc": mean, "ci_low": low, "ci_high": high,
            "p_value": stats.one_sample_p(ratios), "n_skipped": int(units["skipped"].sum())}


def select_pair(changes: pd.DataFrame, pair: Mapping, shots: int | None = None,
                fmt: str | None = None) -> pd.Series:
    """Boolean mask of the changes rows of one pair ``{"eval", "train"[, "shots", "format",
    "lr"]}``. ``train`` None or "*" selects every fine-tune; ``shots``/``format`` default to
    the arguments (None: no filter, for changes already restricted to one setting)."""
    sel = changes["eval_set"] == pair["eval"]
    if pair.get("train") not in (None, "*"):
        sel &= changes["train_task"] == pair["train"]
    shots = pair.get("shots", shots)
    if shots is not None:
        sel &= changes["shots"] == int(shots)
    fmt = pair.get("format", fmt)
    if fmt is not None:
        sel &= changes["format"] == fmt
    if pair.get("lr") is not None:
        sel &= np.isclose(changes["lr"].astype(float), float(pair["lr"]))
    return sel


def _pair_units(changes: pd.DataFrame, pairs: list, shots: int | None,
                fmt: str | None, where: str) -> pd.DataFrame:
    """The changes rows of every pair, each tagged with its position ``pair``; a pair
    naming an unknown eval set or selecting nothing is an error."""
    known = set(changes["eval_set"])
    parts = []
    for i, pair in enumerate(pairs):
        if pair["eval"] not in known:
            raise ValueError(f"{where} names eval set {pair['eval']!r}, which has no "
                             f"fine-tuned scores; known: {sorted(known)}")
        part = changes[select_pair(changes, pair, shots, fmt)]
        if part.empty:
            raise ValueError(f"{where}: pair {dict(pair)} selects no fine-tuned scores "
                             f"(shots {pair.get('shots', shots)}, format "
                             f"{pair.get('format', fmt)})")
        parts.append(part.assign(pair=i))
    return pd.concat(parts, ignore_index=True) if parts else changes.iloc[:0].assign(pair=0)


MRC_COLUMNS = ["direction", "n", "mrc", "ci_low", "ci_high", "p_value", "n_skipped", "model"]


def mrc_cross_task(changes: pd.DataFrame, seed: int, n_boot: int = stats.N_BOOT,
                   alpha: float = stats.ALPHA, pairs: Mapping[str, list] | None = None,
                   shots: int | None = None, fmt: str | None = None) -> pd.DataFrame:
    """The paper's task-transfer MRC, per model and direction.

    Derived (``pairs`` None): "classification->generation": units are (checkpoint,
    fine-tune variant trained on a classification task, in-domain set of a generation
    task). Explicit (``pairs`` = ``{direction: [{"eval", "train", ...}, ...]}``, the
    config's ``cross_task``): units are (checkpoint, pair, fine-tune variant), pairs
    filtered by ``select_pair`` with ``shots``/``fmt`` as defaults. Each seed and learning
    rate is its own unit, so a task fine-tuned with 3 seeds weighs 3x a task with 1 seed,
    as independent fine-tuning runs. The p-value treats units as independent, which they
    are not quite (units share checkpoints and eval sets): read it as descriptive."""
    rows = []
    if pairs:
        for direction, plist in pairs.items():
            units = _pair_units(changes, list(plist), shots, fmt, f"cross_task {direction!r}")
            for model in sorted(changes["model"].unique()):
                rows.append({"model": model, "direction": direction,
                             **mrc_stats(units[units["model"] == model], seed, n_boot, alpha)})
        return pd.DataFrame(rows, columns=MRC_COLUMNS)
    owner_kind = changes["eval_set"].map(in_domain_owner_kind(changes))
    for direction, (src, dst) in DIRECTIONS.items():
        sel = ((changes["role"] == "cross-task") & (changes["train_kind"] == src)
               & (owner_kind == dst) & (changes["eval_kind"] == dst))
        for model in sorted(changes["model"].unique()):
            units = changes[sel & (changes["model"] == model)]
            rows.append({"model": model, "direction": direction,
                         **mrc_stats(units, seed, n_boot, alpha)})
    return pd.DataFrame(rows, columns=MRC_COLUMNS)


def mrc_ood(changes: pd.DataFrame, seed: int, n_boot: int = stats.N_BOOT,
            alpha: float = stats.ALPHA, notes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """MRC on each train task's OOD sets (role "ood"): eval_set "all" pools its OOD sets,
    the other rows break it down per set. Units: (checkpoint, variant, OOD set).
    ``notes`` (eval set -> text, e.g. "unlabelled in the release") travel into a ``note``
    column, on the set's own row and on the pooled row it is part of."""
    notes = notes or {}
    ood = changes[changes["role"] == "ood"]
    rows = []
    for (model, task), g in ood.groupby(["model", "train_task"], sort=True):
        pooled = "; ".join(f"{e}: {notes[e]}" for e in sorted(set(g["eval_set"])) if e in notes)
        rows.append({"model": model, "train_task": task, "eval_set": "all",
                     **mrc_stats(g, seed, n_boot, alpha), "note": pooled})
        for eval_set, ge in g.groupby("eval_set", sort=True):
            rows.append({"model": model, "train_task": task, "eval_set": eval_set,
                         **mrc_stats(ge, seed, n_boot, alpha), "note": notes.get(eval_set, "")})
    return pd.DataFrame(rows, columns=["model", "train_task", "eval_set", "n", "mrc", "ci_low",
                                       "ci_high", "p_value", "n_skipped", "note"])


def mrc_format(changes_all_formats: pd.DataFrame, seed: int, n_boot: int = stats.N_BOOT,
               alpha: float = stats.ALPHA) -> pd.DataFrame:
    """MRC of fine-tuning per prompt format, over (checkpoint, variant) on the in-domain
    set, base and fine-tuned both read in that format (``paired_changes(fmt=None)``)."""
    ind = changes_all_formats[changes_all_formats["role"] == "id"]
    rows = [{"model": model, "format": fmt, **mrc_stats(g, seed, n_boot, alpha)}
            for (model, fmt), g in ind.groupby(["model", "format"], sort=True)]
    return pd.DataFrame(rows, columns=["model", "format", "n", "mrc", "ci_low", "ci_high",
                                       "p_value", "n_skipped"])


# ---------------------------------------------------------------- performance per step

def stage_perf(examples: pd.DataFrame, shots: int, formats, seed: int,
               n_boot: int = stats.N_BOOT, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Base and fine-tuned performance per checkpoint, fine-tuned seeds averaged.

    The seed average is taken per example before bootstrapping, so the interval is over
    examples of the seed-mean model. One row per (model, step, stage, fine-tune config,
    eval set, role, format)."""
    ex = examples[(examples["shots"] == shots) & examples["format"].isin(list(formats))
                  & examples["metric"].isin(PRIMARY)]
    ex = ex.assign(stage=np.where(ex["variant"] == "base", "base", "fine-tuned"))
    keys = ["model", "step", "tokens", "stage", "train_task", "train_kind", "lr", "eval_set",
            "eval_kind", "role", "format", "shots", "metric"]
    per_id = ex.groupby([*keys, "id"], dropna=False, sort=True).agg(
        score=("score", "mean"), n_seeds=("variant", "nunique")).reset_index()
    rows = []
    for key, g in per_id.groupby(keys, dropna=False, sort=True):
        mean, low, high = stats.bootstrap_ci(g["score"].to_numpy(), seed, n_boot, alpha)
        rows.append({**dict(zip(keys, key, strict=True)), "value": mean, "ci_low": low,
                     "ci_high": high, "n": len(g), "n_seeds": int(g["n_seeds"].max())})
    return pd.DataFrame(rows, columns=[*keys, "value", "ci_low", "ci_high", "n", "n_seeds"])


def format_perf(examples: pd.DataFrame, shots: int, seed: int, n_boot: int = stats.N_BOOT,
                alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Value per format x step x in-domain set x base/fine-tuned (paper Fig. 5 and 14)."""
    id_sets = examples.loc[examples["role"] == "id", "eval_set"].unique()
    ex = examples[examples["eval_set"].isin(id_sets)
                  & examples["role"].isin(["base", "id"])]
    return stage_perf(ex, shots, ex["format"].unique(), seed, n_boot, alpha)


# ---------------------------------------------------------------- base trend and groups

def trend_verdict(diff: float, low: float, high: float, threshold: float) -> str:
    """"rises": last - first > threshold and the interval above 0; "falls" symmetric."""
    if diff > threshold and low > 0:
        return "rises"
    if diff < -threshold and high < 0:
        return "falls"
    return "flat"


def base_trend(examples: pd.DataFrame, shots: int, fmt: str, rise_threshold: float,
               seed: int, n_boot: int = stats.N_BOOT,
               alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Base score at the first and last checkpoint per eval set, and their difference with
    a paired bootstrap over the examples scored at both checkpoints."""
    base = examples[(examples["variant"] == "base") & (examples["shots"] == shots)
                    & (examples["format"] == fmt) & examples["metric"].isin(PRIMARY)]
    rows = []
    for (model, eval_set), g in base.groupby(["model", "eval_set"], sort=True):
        first, last = int(g["step"].min()), int(g["step"].max())
        wide = g.pivot_table(index="id", columns="step", values="score", aggfunc="mean")
        both = wide[first].notna() & wide[last].notna()  # ids scored at both checkpoints
        a, b = wide.loc[both, first], wide.loc[both, last]
        diff, low, high = stats.paired_bootstrap(b, a, seed, n_boot, alpha)
        rows.append({"model": model, "eval_set": eval_set, "eval_kind": g["eval_kind"].iloc[0],
                     "metric": g["metric"].iloc[0], "first_step": first, "last_step": last,
                     "base_first": a.mean(), "base_last": b.mean(),
                     "diff": diff, "ci_low": low, "ci_high": high, "n": int(both.sum()),
                     "verdict": trend_verdict(diff, low, high, rise_threshold)})
    return pd.DataFrame(rows, columns=["model", "eval_set", "eval_kind", "metric", "first_step",
                                       "last_step", "base_first", "base_last", "diff",
                                       "ci_low", "ci_high", "n", "verdict"])


def default_pairs(changes: pd.DataFrame) -> list[dict]:
    """(eval, train) pairs when the config names no groups: every in-domain set with its
    own task, and every benchmark with every fine-tune ("*")."""
    ind = changes.loc[changes["role"] == "id", ["eval_set", "train_task"]].drop_duplicates()
    pairs = [{"eval": e, "train": t} for e, t in ind.itertuples(index=False)]
    bench = sorted(changes.loc[changes["role"] == "benchmark", "eval_set"].unique())
    return sorted(pairs, key=lambda p: (p["eval"], p["train"])) + [
        {"eval": e, "train": "*"} for e in bench]


def group_units(changes: pd.DataFrame, groups: Mapping[str, list], shots: int | None = None,
                fmt: str | None = None) -> pd.DataFrame:
    """The (checkpoint, pair) units of each group, seeds averaged within a pair.

    A pair ``{"eval": E, "train": T}`` selects fine-tunes of task T scored on set E;
    ``"train": "*"`` selects every fine-tune (for benchmarks no fine-tune targets); optional
    ``shots``/``format``/``lr`` keys override ``shots``/``fmt`` (see ``select_pair``). Each
    learning rate stays its own unit, and so does each listed pair: a pair listed twice
    counts twice. ratio = seed-mean diff / base, NaN if skipped."""
    known = set(changes["eval_set"])
    parts = []
    for group, pairs in groups.items():
        for i, pair in enumerate(pairs):
            if pair["eval"] not in known:
                raise ValueError(f"group {group!r} names eval set {pair['eval']!r}, which has "
                                 f"no fine-tuned scores; known: {sorted(known)}")
            sel = select_pair(changes, pair, shots, fmt)
            parts.append(changes[sel].assign(group=group, pair=i))
    cols = ["model", "group", "pair", "step", "eval_set", "train_task", "lr"]
    if not parts:
        return pd.DataFrame(columns=[*cols, "base", "diff", "ratio", "skipped"])
    units = pd.concat(parts).groupby(cols, dropna=False, sort=True).agg(
        base=("base", "first"), diff=("diff", "mean"), skipped=("skipped", "first"))
    units["ratio"] = (units["diff"] / units["base"]).where(~units["skipped"])
    return units.reset_index()


def pt_ft_groups(units: pd.DataFrame, seed: int, n_boot: int = stats.N_BOOT,
                 alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Paper Table 5: mean ft - base and mean (ft - base)/base per group and checkpoint,
    plus a step "all" row (every unit of the group) whose ci_low/ci_high bound raw_change."""
    rows = []
    for (model, group), g in units.groupby(["model", "group"], sort=True):
        for step, gs in g.groupby("step", sort=True):
            rows.append({"model": model, "group": group, "step": step,
                         "raw_change": gs["diff"].mean(), "ratio_change": gs["ratio"].mean(),
                         "n": len(gs), "n_skipped": int(gs["skipped"].sum()),
                         "ci_low": np.nan, "ci_high": np.nan})
        mean, low, high = stats.bootstrap_ci(g["diff"].to_numpy(), seed, n_boot, alpha)
        rows.append({"model": model, "group": group, "step": "all", "raw_change": mean,
                     "ratio_change": g["ratio"].mean(), "n": len(g),
                     "n_skipped": int(g["skipped"].sum()), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["group", "step", "raw_change", "ratio_change", "n",
                                       "n_skipped", "ci_low", "ci_high", "model"])


def data_groups(units_all: pd.DataFrame, trend: pd.DataFrame) -> pd.DataFrame:
    """Relabel units by the data: "pretraining" when the eval set's base score rises across
    checkpoints (``base_trend`` verdict "rises"), else "finetuning"."""
    rises = trend.assign(g=np.where(trend["verdict"] == "rises", "pretraining", "finetuning"))
    label = rises.set_index(["model", "eval_set"])["g"]
    keys = pd.MultiIndex.from_frame(units_all[["model", "eval_set"]])
    return units_all.assign(group=label.reindex(keys).fillna("finetuning").to_numpy())


def group_membership(groups: Mapping[str, list], pairs: list[dict],
                     trend: pd.DataFrame) -> pd.DataFrame:
    """Per eval set in the groups: its group by design (config) and by data (base trend)."""
    by_design = {}
    for group, plist in groups.items():
        for pair in plist:
            by_design.setdefault(pair["eval"], group)
    evals = sorted({p["eval"] for p in pairs})
    t = trend[trend["eval_set"].isin(evals)].copy()
    t["by_design"] = t["eval_set"].map(by_design)
    t["by_data"] = np.where(t["verdict"] == "rises", "pretraining", "finetuning")
    return t[["model", "eval_set", "by_design", "by_data", "base_first", "base_last", "diff",
              "ci_low", "ci_high", "verdict", "n"]].reset_index(drop=True)


# ---------------------------------------------------------------- per-example comparisons

def _majority(gold: pd.Series) -> np.ndarray:
    """1.0 where the gold label is the most frequent one (ties: alphabetically first)."""
    counts = gold.value_counts()
    top = sorted(counts[counts == counts.max()].index)[0]
    return (gold == top).to_numpy(dtype=float)


def _margin(data: dict, steps: list, with_majority: bool) -> float:
    """Mean over steps of ft - max(base, majority) on (resampled) aligned arrays."""
    margins = []
    for s in steps:
        ref = data[f"base{s}"].mean()
        if with_majority:
            ref = max(ref, data["maj"].mean())
        margins.append(data[f"ft{s}"].mean() - ref)
    return float(np.mean(margins))


def ft_vs_base(examples: pd.DataFrame, shots: int, fmt: str, seed: int,
               n_boot: int = stats.N_BOOT, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """In-domain and OOD sets: base, fine-tuned (seed mean), majority-class accuracy
    (classification only) and margin = ft - max(base, majority), per checkpoint, plus a
    step "all" row with the mean margin over checkpoints. Intervals resample examples once
    per resample for every checkpoint and model (paired)."""
    ex = examples[(examples["shots"] == shots) & (examples["format"] == fmt)
                  & examples["metric"].isin(PRIMARY)]
    base = ex[ex["variant"] == "base"]
    ft = ex[ex["role"].isin(["id", "ood"])]
    rows = []
    for (model, task, lr, eval_set), g in ft.groupby(["model", "train_task", "lr", "eval_set"],
                                                     dropna=False, sort=True):
        b = base[(base["model"] == model) & (base["eval_set"] == eval_set)]
        wide = pd.concat({"ft": g.pivot_table(index="id", columns="step", values="score",
                                              aggfunc="mean"),
                          "base": b.pivot_table(index="id", columns="step", values="score")},
                         axis=1)
        steps = sorted(set(g["step"]) & set(b["step"]))
        if not steps:  # no base model at any of this fine-tune's checkpoints
            continue
        wide = wide.loc[:, [(k, s) for k in ("ft", "base") for s in steps]].dropna().sort_index()
        with_maj = g["eval_kind"].iloc[0] == "classification"
        data = {f"{k}{s}": wide[(k, s)].to_numpy() for k in ("ft", "base") for s in steps}
        gold = b.drop_duplicates("id").set_index("id")["gold"].reindex(wide.index)
        data["maj"] = _majority(gold) if with_maj and len(gold) else np.zeros(len(wide))
        common = {"model": model, "eval_set": eval_set, "eval_kind": g["eval_kind"].iloc[0],
                  "role": g["role"].iloc[0], "train_task": task, "lr": lr,
                  "majority": data["maj"].mean() if with_maj else np.nan, "n": len(wide),
                  "n_seeds": g["variant"].nunique()}
        for s in [*steps, "all"]:
            these = steps if s == "all" else [s]
            sub = {k: v for k, v in data.items()
                   if k == "maj" or any(k in (f"ft{t}", f"base{t}") for t in these)}
            margin, low, high = stats.bootstrap_stat(
                sub, lambda d, st=these, wm=with_maj: _margin(d, st, wm), seed, n_boot, alpha)
            rows.append({**common, "step": s,
                         "base": np.mean([data[f"base{t}"].mean() for t in these]),
                         "ft": np.mean([data[f"ft{t}"].mean() for t in these]),
                         "margin": margin, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["model", "eval_set", "eval_kind", "role", "train_task",
                                       "lr", "step", "base", "ft", "majority", "margin",
                                       "ci_low", "ci_high", "n", "n_seeds"])


def forgetting(examples: pd.DataFrame, shots: int, fmt: str,
               threshold: float = ROUGE_CORRECT) -> pd.DataFrame:
    """Per (variant, eval set): examples correct->wrong (forgotten) and wrong->correct
    (learned) from the base at the same checkpoint to the fine-tune, on the same ids.
    Correct = score >= threshold: for 0/1 accuracy that is simply "right"; for ROUGE-L it
    means F1 >= 0.5 (a choice, recorded in the ``threshold`` column)."""
    ex = examples[(examples["shots"] == shots) & (examples["format"] == fmt)
                  & examples["metric"].isin(PRIMARY)]
    on = ["model", "step", "eval_set", "format", "shots", "metric", "id"]
    base = ex.loc[ex["variant"] == "base", [*on, "score"]]
    m = ex[ex["variant"] != "base"].merge(base, on=on, suffixes=("", "_base"))
    m = m.assign(c_ft=m["score"] >= threshold, c_base=m["score_base"] >= threshold)
    m = m.assign(forgotten=m["c_base"] & ~m["c_ft"], learned=~m["c_base"] & m["c_ft"])
    keys = ["model", "step", "variant", "train_task", "lr", "seed", "eval_set", "eval_kind",
            "role", "format", "shots", "metric"]
    out = m.groupby(keys, dropna=False, sort=True).agg(
        n=("id", "size"), base_correct=("c_base", "sum"), ft_correct=("c_ft", "sum"),
        forgotten=("forgotten", "sum"), learned=("learned", "sum")).reset_index()
    out["threshold"] = threshold
    out["forgotten_rate"] = out["forgotten"] / out["base_correct"].where(out["base_correct"] > 0)
    wrong = out["n"] - out["base_correct"]
    out["learned_rate"] = out["learned"] / wrong.where(wrong > 0)
    return out


# ---------------------------------------------------------------- headline numbers

def _records(df: pd.DataFrame, cols: list[str]) -> list[dict]:
    return [dict(zip(cols, r, strict=True)) for r in df[cols].itertuples(index=False)]


def _group_gain(units: pd.DataFrame, boot: dict) -> list[dict]:
    out = []
    for model, g in units.groupby("model", sort=True):
        gains = {k: g.loc[g["group"] == k, "diff"].to_numpy()
                 for k in ("finetuning", "pretraining")}
        rec = {"model": model}
        for k, v in gains.items():
            mean, low, high = stats.bootstrap_ci(v, boot["seed"], boot["n_boot"], boot["alpha"])
            rec[k] = {"mean": mean, "ci_low": low, "ci_high": high, "n": int(v.size)}
        diff, low, high = stats.bootstrap_diff(gains["finetuning"], gains["pretraining"],
                                               boot["seed"], boot["n_boot"], boot["alpha"])
        rec["finetuning_minus_pretraining"] = {"mean": diff, "ci_low": low, "ci_high": high}
        out.append(rec)
    return out


def summary(tables: Mapping[str, pd.DataFrame], units_design: pd.DataFrame,
            units_data: pd.DataFrame | None, cfg: dict) -> dict:
    """The headline numbers: (a) base trends, (b) group gains, (c) classification margins,
    (d) cross-task MRC. Parts whose tables were skipped (no per-example table) are null,
    and ``skipped_tables`` names those tables."""
    keep = ["model", "eval_set", "diff", "ci_low", "ci_high", "base_first", "base_last"]
    mcols = ["model", "eval_set", "train_task", "lr", "margin", "ci_low", "ci_high", "base",
             "ft", "majority", "n_seeds"]
    trend, margins = tables.get("base_trend"), tables.get("ft_vs_base")
    if margins is not None:
        margins = margins[(margins["step"].astype(str) == "all")
                          & (margins["eval_kind"] == "classification")]
    return {
        "settings": {k: cfg[k] for k in ("format", "shots", "seed", "n_boot", "alpha",
                                         "min_base", "rise_threshold")},
        "skipped_tables": [n for n in TABLE_NAMES if n not in tables],
        "base_trend": None if trend is None else {
            v: _records(trend[trend["verdict"] == v], keep) for v in ("rises", "flat", "falls")},
        "group_gain": {"by_design": _group_gain(units_design, _boot(cfg)),
                       "by_data": (None if units_data is None
                                   else _group_gain(units_data, _boot(cfg)))},
        "classification_margin": None if margins is None else {
            r: _records(margins[margins["role"] == r], mcols) for r in ("id", "ood")},
        "mrc_cross_task": _records(tables["mrc_cross_task"],
                                   list(tables["mrc_cross_task"].columns)),
    }


def _json_safe(obj):
    """NaN/inf -> null and numpy scalars -> Python, so the JSON is strict and readable."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is pd.NA or (isinstance(obj, float) and not math.isfinite(obj)):
        return None
    return obj


# ---------------------------------------------------------------- everything at once

def _unique_pairs(pairs: list) -> list:
    """Pairs in first-seen order without repeats (a pair listed in two groups, or twice)."""
    seen, out = set(), []
    for p in pairs:
        key = tuple(sorted((k, str(v)) for k, v in p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def compute_tables(scores: pd.DataFrame, examples: pd.DataFrame | None,
                   analysis_cfg: Mapping) -> tuple[dict[str, pd.DataFrame], dict]:
    """The tables (``TABLE_NAMES``) and the summary dict.

    Without ``examples`` the tables of ``EXAMPLE_TABLES`` are skipped (absent from the
    dict; the summary's ``skipped_tables`` lists them)."""
    cfg = _settings(analysis_cfg)
    boot, shots, fmt = _boot(cfg), cfg["shots"], cfg["format"]
    changes = paired_changes(scores, shots, fmt, cfg["min_base"])
    changes_any = paired_changes(scores, None, None, cfg["min_base"])  # for pair overrides
    groups = cfg["groups"] or {"all": default_pairs(changes)}
    pairs = _unique_pairs([p for plist in groups.values() for p in plist])
    units_design = group_units(changes_any, groups, shots, fmt)
    if cfg["cross_task"]:
        cross = mrc_cross_task(changes_any, **boot, pairs=cfg["cross_task"], shots=shots,
                               fmt=fmt)
    else:
        cross = mrc_cross_task(changes, **boot)
    tables = {
        "mrc_cross_task": cross,
        "mrc_ood": mrc_ood(changes, **boot, notes=cfg["notes"]),
        "mrc_format": mrc_format(paired_changes(scores, shots, None, cfg["min_base"]), **boot),
        "pt_ft_groups": pt_ft_groups(units_design, **boot),
    }
    units_data = None
    if examples is not None:
        trend = base_trend(examples, shots, fmt, cfg["rise_threshold"], **boot)
        units_data = data_groups(group_units(changes_any, {"all": pairs}, shots, fmt), trend)
        tables.update({
            "format_perf": format_perf(examples, shots, **boot),
            "perf_steps": stage_perf(examples, shots, [fmt], **boot),
            "pt_ft_groups_data": pt_ft_groups(units_data, **boot),
            "group_membership": group_membership(cfg["groups"], pairs, trend),
            "base_trend": trend,
            "ft_vs_base": ft_vs_base(examples, shots, fmt, **boot),
            "forgetting": forgetting(examples, shots, fmt),
        })
    tables = {name: tables[name] for name in TABLE_NAMES if name in tables}
    return tables, summary(tables, units_design, units_data, cfg)


# ---------------------------------------------------------------- compute cost (Table 3)

def _read_benchmark(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t")
    if "s" not in df.columns:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column); "
                         f"columns {list(df.columns)}")
    for col in ("s", "max_rss", "cpu_time"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def gpu_hours(benchmark_dir: str | os.PathLike,
              gpus_per_job: Mapping[str, float] | None = None,
              models: Sequence[str] | None = None,
              finetune_gpus: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Wall-clock and GPU hours per rule (stage) from Snakemake ``benchmark:`` files, like
    the paper's Table 3.

    Files are ``{benchmark_dir}/{rule}/.../*.tsv`` (a file directly in ``benchmark_dir``
    counts under its own stem). Every row counts: a ``repeat()``-ed benchmark ran its job
    that many times. hours = sum of ``s`` / 3600; gpu_hours = hours x the rule's GPUs per
    job (``gpus_per_job``, default ``GPUS_PER_JOB``: 1 for pretrain, finetune, evaluate
    and ablation, 0 for any other rule), except that a fine-tune named in ``finetune_gpus``
    (``{model}/{fine-tune}``: its ``gpus`` setting, `study.finetune_gpus`) counts that many;
    a rule's ``gpus_per_job`` column is then its time-weighted mean. cpu_hours from
    ``cpu_time`` (NaN where absent). A last row ``rule = "total"`` sums the others. With
    ``models`` (``analysis.models``), the per-model rules' files of other models and the
    transfer rules' files are left out, so the table covers the analysed models only,
    whatever else ran beside them."""
    gpus = dict(GPUS_PER_JOB if gpus_per_job is None else gpus_per_job)
    finetune_gpus = dict(finetune_gpus or {})
    root = Path(benchmark_dir)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        if models and (rule.startswith("transfer_") or (
                rule in PER_MODEL_RULES and Path(rel.parts[1]).stem not in models)):
            continue
        df = _read_benchmark(path)
        job_gpus = float(gpus.get(rule, 0))
        if rule == "finetune" and len(rel.parts) > 2:  # finetune/{model}/{step}/{ft}.tsv
            job_gpus = float(finetune_gpus.get(f"{rel.parts[1]}/{path.stem}", job_gpus))
        rows.append({"rule": rule, "jobs": 1, "runs": len(df), "seconds": df["s"].sum(),
                     "gpu_seconds": df["s"].sum() * job_gpus,
                     "cpu_seconds": df["cpu_time"].sum(min_count=1) if "cpu_time" in df
                     else np.nan,
                     "max_rss_mb": df["max_rss"].max() if "max_rss" in df else np.nan})
    cols = ["rule", "jobs", "runs", "hours", "cpu_hours", "max_rss_mb", "gpus_per_job",
            "gpu_hours"]
    if not rows:
        return pd.DataFrame(columns=cols)
    per = pd.DataFrame(rows).groupby("rule", sort=True).agg(
        jobs=("jobs", "sum"), runs=("runs", "sum"), seconds=("seconds", "sum"),
        gpu_seconds=("gpu_seconds", "sum"),
        cpu_seconds=("cpu_seconds", lambda s: s.sum(min_count=1)),
        max_rss_mb=("max_rss_mb", "max")).reset_index()
    per["hours"] = per["seconds"] / 3600
    per["cpu_hours"] = per["cpu_seconds"] / 3600
    per["gpu_hours"] = per["gpu_seconds"] / 3600
    # Time-weighted mean over the rule's jobs; the rule's own setting where it took no time.
    per["gpus_per_job"] = (per["gpu_seconds"] / per["seconds"]).where(
        per["seconds"] > 0, per["rule"].map(lambda r: float(gpus.get(r, 0))))
    total = {"rule": "total", "jobs": per["jobs"].sum(), "runs": per["runs"].sum(),
             "hours": per["hours"].sum(), "cpu_hours": per["cpu_hours"].sum(min_count=1),
             "max_rss_mb": per["max_rss_mb"].max(), "gpus_per_job": np.nan,
             "gpu_hours": per["gpu_hours"].sum()}
    return pd.concat([per[cols], pd.DataFrame([total], columns=cols)], ignore_index=True)


# ---------------------------------------------------------------- method ablation (Table 2)

ABLATION_KEYS = ["model", "step", "variant", "eval_set", "shots", "method"]
ABLATION_COLUMNS = [*ABLATION_KEYS, "accuracy", "ci_low", "ci_high", "n"]
ABLATION_ORDER = ABLATION_METHODS
"""Method order of the ablation table (the paper's Table 2, then our default)."""


def ablation_table(predictions: pd.DataFrame, seed: int = 0, n_boot: int = stats.N_BOOT,
                   alpha: float = stats.ALPHA) -> pd.DataFrame:
    """The paper's Table 2: accuracy per (model, step, variant, eval set, shots, method)
    from the ablation's per-example predictions (``ckptsweep ablation``), with a seeded
    percentile bootstrap interval over the examples (sorted by id, so the intervals of
    the methods are paired). Base rows come first, methods in ``ABLATION_ORDER``."""
    ex = predictions[predictions["metric"] == "accuracy"]
    rows = []
    for key, g in ex.sort_values("id", kind="stable").groupby(ABLATION_KEYS, sort=False):
        mean, low, high = stats.bootstrap_ci(g["score"].to_numpy(dtype=float), seed, n_boot,
                                             alpha)
        rows.append({**dict(zip(ABLATION_KEYS, key, strict=True)), "accuracy": mean,
                     "ci_low": low, "ci_high": high, "n": len(g)})
    out = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    rank = {m: i for i, m in enumerate(ABLATION_ORDER)}
    out = out.assign(_ft=out["variant"] != "base",
                     _rank=out["method"].map(lambda m: rank.get(m, len(rank))))
    out = out.sort_values(["model", "step", "_ft", "variant", "eval_set", "shots", "_rank",
                           "method"], kind="stable")
    return out.drop(columns=["_ft", "_rank"]).reset_index(drop=True)


# ---------------------------------------------------------------- files

def _write_table(out: Path, name: str, df: pd.DataFrame) -> list[Path]:
    return [atomic_write(out / f"{name}.csv", lambda p: df.to_csv(p, index=False)),
            atomic_write(out / f"{name}.html", lambda p: df.to_html(
                p, index=False, float_format=lambda x: f"{x:.4f}", na_rep="", border=0))]


def write_tables(scores: pd.DataFrame, examples: pd.DataFrame | None, analysis_cfg: Mapping,
                 out_dir: str | os.PathLike,
                 benchmarks: str | os.PathLike | None = None,
                 ablation: pd.DataFrame | None = None) -> list[Path]:
    """Write every table as ``{name}.csv`` + ``{name}.html`` and ``summary.json`` into
    ``out_dir`` (each file atomically); returns the paths written.

    Without ``examples`` the per-example tables are skipped (see ``compute_tables``). With
    ``benchmarks`` (a Snakemake benchmarks folder) ``gpu_hours.csv``/``.html`` are written
    too, GPUs per job from ``analysis_cfg["gpus_per_job"]`` (default ``GPUS_PER_JOB``);
    with ``ablation`` (the ablation's predictions) ``ablation.csv``/``.html``
    (`ablation_table`, bootstrap settings of ``analysis_cfg``)."""
    tables, headline = compute_tables(scores, examples, analysis_cfg)
    cfg = _settings(analysis_cfg)
    out = Path(out_dir)
    paths = []
    for name, df in tables.items():
        paths += _write_table(out, name, df)
    if benchmarks is not None:
        paths += _write_table(out, "gpu_hours", gpu_hours(
            benchmarks, cfg["gpus_per_job"], cfg["models"] or None, cfg["finetune_gpus"]))
    if ablation is not None:
        paths += _write_table(out, "ablation", ablation_table(ablation, **_boot(cfg)))
    text = json.dumps(_json_safe(headline), indent=2, allow_nan=False) + "\n"
    paths.append(atomic_write(out / "summary.json", lambda p: p.write_text(text, "utf-8")))
    return paths


def read_tables(tables_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The CSV tables written by ``write_tables``, by name (for figures and the report)."""
    d = Path(tables_dir)
    return {name: pd.read_csv(d / f"{name}.csv")
            for name in (*TABLE_NAMES, *EXTRA_TABLES) if (d / f"{name}.csv").exists()}

"""The base model's trend across checkpoints, and the groups of (eval set, fine-tune)
pairs whose gains from fine-tuning are compared: by design (the config's ``groups``:
capabilities that come with fine-tuning or with pre-training, paper Table 5) and by data
(``data_groups``: "pretraining" where the base score rises across checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ckptsweep.analysis import stats
from ckptsweep.analysis.mrc import PRIMARY, select_pair
from ckptsweep.errors import ConfigError


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
                raise ConfigError(f"analysis.groups.{group}[{i}].eval", f"eval set "
                                  f"{pair['eval']!r} has no fine-tuned scores; known: "
                                  f"{sorted(known)}")
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

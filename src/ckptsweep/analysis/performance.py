"""Performance from the per-example scores: base and fine-tuned per checkpoint
(``stage_perf``, per format ``format_perf``), fine-tuned against base and the majority
class (``ft_vs_base``), and the examples fine-tuning forgets or learns (``forgetting``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ckptsweep.analysis import stats
from ckptsweep.analysis.mrc import PRIMARY

ROUGE_CORRECT = 0.5
"""For forgetting counts a ROUGE-L example counts as correct when its score is >= 0.5."""


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

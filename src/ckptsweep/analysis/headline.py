"""The headline numbers of the AMURO & CHAR tables, written as ``summary.json``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ckptsweep.analysis import stats
from ckptsweep.analysis.names import TABLE_NAMES
from ckptsweep.analysis.settings import boot_args


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
        "group_gain": {"by_design": _group_gain(units_design, boot_args(cfg)),
                       "by_data": (None if units_data is None
                                   else _group_gain(units_data, boot_args(cfg)))},
        "classification_margin": None if margins is None else {
            r: _records(margins[margins["role"] == r], mcols) for r in ("id", "ood")},
        "mrc_cross_task": _records(tables["mrc_cross_task"],
                                   list(tables["mrc_cross_task"].columns)),
    }


def json_safe(obj):
    """NaN/inf -> null and numpy scalars -> Python, so the JSON is strict and readable."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is pd.NA or (isinstance(obj, float) and not math.isfinite(obj)):
        return None
    return obj

"""Fine-tuned against base, cell by cell, and the mean ratio of change (MRC) tables.

``paired_changes`` meets every fine-tuned score with the base score of its cell (same
checkpoint, eval set, format, shots, metric); the MRC tables average ``(ft - base) / base``
over units of those rows: across tasks (``mrc_cross_task``), on each task's OOD sets
(``mrc_ood``) and per prompt format (``mrc_format``). ``select_pair`` picks the rows of
one ``{"eval", "train", ...}`` pair, for these and for the groups (``groups``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ckptsweep.analysis import stats
from ckptsweep.errors import ConfigError

PRIMARY = ("accuracy", "rouge_l")
CELL = ["model", "step", "eval_set", "format", "shots", "metric"]
"""A (checkpoint, eval set, format, shots, metric) cell: base and fine-tuned meet on it."""
FT_CONFIG = ["model", "train_task", "train_kind", "lr"]
"""A fine-tuning configuration; its seeds are averaged where a table says so."""
DIRECTIONS = {"classification->generation": ("classification", "generation"),
              "generation->classification": ("generation", "classification")}


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
            raise ConfigError(f"{where}[{i}].eval", f"eval set {pair['eval']!r} has no "
                              f"fine-tuned scores; known: {sorted(known)}")
        part = changes[select_pair(changes, pair, shots, fmt)]
        if part.empty:
            raise ConfigError(f"{where}[{i}]", f"pair {dict(pair)} selects no fine-tuned "
                              f"scores (shots {pair.get('shots', shots)}, format "
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
            units = _pair_units(changes, list(plist), shots, fmt, f"cross_task.{direction}")
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

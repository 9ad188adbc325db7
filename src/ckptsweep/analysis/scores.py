"""Per-example predictions -> the tidy scores table (and a per-example long table).

Inputs:

- a manifest: a JSON list (or the list itself) of ``{"path", "model", "step", "tokens",
  "variant", "train_task", "train_kind", "lr", "seed"}``, one entry per predictions file;
- the eval-set description from the config: ``eval_set -> {"task", "kind", "of", "role_in"}``.

Outputs (both written atomically by ``write_outputs``):

- ``scores``: one row per (model variant, eval set, format, shots, metric) with the mean
  score, a seeded percentile-bootstrap interval over examples and the number of examples.
  Multiple-choice sets get an extra ``accuracy_norm`` row from ``score_norm``.
- ``examples``: one row per scored example with its provenance and role, which the tables
  that need per-example pairing (base trend, margins, forgetting) read.

Every table and figure is computed from these, never from file names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ckptsweep.analysis.settings import ALPHA, N_BOOT
from ckptsweep.analysis.stats import bootstrap_ci
from ckptsweep.files import atomic_write

PROVENANCE = ["model", "step", "tokens", "variant", "train_task", "train_kind", "lr", "seed"]
"""Columns copied from the manifest onto every row."""

SCORES_COLUMNS = [*PROVENANCE, "eval_set", "eval_kind", "role", "format", "shots", "metric",
                  "value", "ci_low", "ci_high", "n"]
EXAMPLES_COLUMNS = [*PROVENANCE, "eval_set", "task", "eval_kind", "role", "format", "shots",
                    "id", "metric", "score", "score_norm", "gold", "prediction"]
PREDICTION_COLUMNS = ["eval_set", "format", "shots", "id", "gold", "prediction", "score",
                      "score_norm", "metric"]
"""The predictions-file columns this module reads (others are left on disk)."""

ROLES = ("base", "id", "ood", "cross-task", "benchmark")


def _load(obj, what: str):
    """Accept either the parsed object or a path to a JSON file holding it."""
    if isinstance(obj, (str, os.PathLike)):
        with open(obj, encoding="utf-8") as fh:
            return json.load(fh)
    if obj is None:
        raise ValueError(f"no {what} given")
    return obj


def assign_role(variant: str, train_task: str | None, eval_set: str,
                eval_sets: Mapping[str, Mapping]) -> str:
    """The role of an eval set for one model variant.

    base rows -> "base"; the set belongs to the variant's training dataset -> its
    ``role_in`` ("id" or "ood"); a set that belongs to no training dataset (``of`` null:
    the multiple-choice benchmarks) -> "benchmark"; any other set -> "cross-task"."""
    try:
        info = eval_sets[eval_set]
    except KeyError:
        raise ValueError(f"eval set {eval_set!r} is not in the eval-set description; "
                         f"known: {sorted(eval_sets)}") from None
    if variant == "base":
        return "base"
    of = info.get("of")
    if of is not None and of == train_task and info.get("role_in") in ("id", "ood"):
        return info["role_in"]
    if of is None:
        return "benchmark"
    return "cross-task"


def _read_predictions(entry: Mapping, eval_sets: Mapping[str, Mapping],
                      root: Path | None) -> pd.DataFrame:
    path = Path(entry["path"])
    if root is not None and not path.is_absolute():
        path = root / path
    df = pd.read_parquet(path)
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: predictions file lacks column(s) {missing}")
    # The task type comes from the file where it has one, else from the eval-set description.
    task = df["task"] if "task" in df.columns else None
    df = df[PREDICTION_COLUMNS].copy()
    for col in PROVENANCE:
        df[col] = entry.get(col)
    roles = {e: assign_role(entry["variant"], entry.get("train_task"), e, eval_sets)
             for e in df["eval_set"].unique()}
    df["role"] = df["eval_set"].map(roles)
    df["eval_kind"] = df["eval_set"].map(lambda e: eval_sets[e]["kind"])
    df["task"] = task if task is not None else df["eval_set"].map(
        lambda e: eval_sets[e].get("task"))
    return df


def _fix_dtypes(examples: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes whatever the manifest held (JSON null for base lr/seed/train_task)."""
    examples = examples.astype({"step": "int64", "tokens": "int64", "shots": "int64",
                                "lr": "float64", "score": "float64", "score_norm": "float64"})
    examples["seed"] = examples["seed"].astype("Int64")
    for col in ("model", "variant", "train_task", "train_kind", "eval_set", "task",
                "eval_kind", "role", "format", "id", "metric", "gold", "prediction"):
        examples[col] = examples[col].astype("string")
    return examples


def load_examples(manifest, eval_sets, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read every predictions file of the manifest into one per-example long table."""
    manifest = _load(manifest, "manifest")
    eval_sets = _load(eval_sets, "eval-set description")
    root_path = Path(root) if root is not None else None
    frames = [_read_predictions(entry, eval_sets, root_path) for entry in manifest]
    if not frames:
        return _fix_dtypes(pd.DataFrame(columns=EXAMPLES_COLUMNS))
    examples = _fix_dtypes(pd.concat(frames, ignore_index=True)[EXAMPLES_COLUMNS])
    cell = ["model", "step", "variant", "eval_set", "format", "shots", "metric", "id"]
    dup = examples.duplicated(cell, keep=False)
    if dup.any():
        first = examples.loc[dup, cell].iloc[0].to_dict()
        raise ValueError(f"{int(dup.sum())} example rows are duplicated (same variant, eval "
                         f"set, format, shots and id; two manifest entries for one cell?), "
                         f"e.g. {first}")
    return examples.sort_values(cell, kind="stable", ignore_index=True)


def _score_rows(examples: pd.DataFrame, column: str, metric: str | None, seed: int,
                n_boot: int, alpha: float) -> pd.DataFrame:
    """One scores row per cell from the per-example ``column``.

    Examples are sorted by id, and every cell is bootstrapped with the same seed, so cells
    of the same eval set resample the same examples (paired across models)."""
    keys = [*PROVENANCE, "eval_set", "eval_kind", "role", "format", "shots", "metric"]
    rows = []
    for key, group in examples.groupby(keys, dropna=False, sort=False):
        values = group[column].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            continue
        mean, low, high = bootstrap_ci(values, seed, n_boot, alpha)
        row = dict(zip(keys, key, strict=True))
        if metric is not None:
            row["metric"] = metric
        rows.append({**row, "value": mean, "ci_low": low, "ci_high": high, "n": values.size})
    return pd.DataFrame(rows, columns=SCORES_COLUMNS)


def scores_from_examples(examples: pd.DataFrame, seed: int, n_boot: int = N_BOOT,
                         alpha: float = ALPHA) -> pd.DataFrame:
    """The tidy scores table (``SCORES_COLUMNS``) from the per-example table."""
    examples = examples.sort_values("id", kind="stable")
    main = _score_rows(examples, "score", None, seed, n_boot, alpha)
    # score_norm is NaN except for multiple choice, so only those cells get a row.
    norm = _score_rows(examples[examples["score_norm"].notna()], "score_norm",
                       "accuracy_norm", seed, n_boot, alpha)
    scores = pd.concat([df for df in (main, norm) if not df.empty], ignore_index=True)
    if scores.empty:
        scores = pd.DataFrame(columns=SCORES_COLUMNS)
    scores = scores.astype({"step": "int64", "tokens": "int64", "shots": "int64",
                            "lr": "float64", "value": "float64", "ci_low": "float64",
                            "ci_high": "float64", "n": "int64"})
    scores["seed"] = scores["seed"].astype("Int64")
    order = ["model", "step", "variant", "eval_set", "format", "shots", "metric"]
    return scores.sort_values(order, kind="stable", ignore_index=True)[SCORES_COLUMNS]


def build_tables(manifest, eval_sets, seed: int, n_boot: int = N_BOOT, alpha: float = ALPHA,
                 root: str | os.PathLike | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores_df, examples_df) from a manifest and the eval-set description.

    ``manifest`` and ``eval_sets`` are the parsed JSON or paths to it. Relative predictions
    paths are read relative to ``root`` (default: the working directory, as in Snakemake)."""
    examples = load_examples(manifest, eval_sets, root)
    return scores_from_examples(examples, seed, n_boot, alpha), examples


def write_outputs(scores: pd.DataFrame, examples: pd.DataFrame,
                  scores_path: str | os.PathLike,
                  examples_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write both tables as parquet, atomically; returns the two paths."""
    return (atomic_write(scores_path, lambda p: scores.to_parquet(p, index=False)),
            atomic_write(examples_path, lambda p: examples.to_parquet(p, index=False)))

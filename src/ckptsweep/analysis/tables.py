"""Every analysis table of the AMURO & CHAR study, from the scores and examples tables:
``compute_tables`` composes them, ``write_tables`` writes them with ``summary.json``.

The tables are computed in ``mrc`` (fine-tuned vs base cells, MRC), ``performance``
(per checkpoint, fine-tuned vs base and majority, forgetting), ``groups`` (base trend,
groups by design and by data) and ``headline`` (``summary.json``), with the settings of
``settings``; beside them ``cost`` (GPU hours, the paper's Table 3) and ``ablation`` (the
method ablation, Table 2).

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
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.ablation import ablation_table
from ckptsweep.analysis.cost import gpu_hours
from ckptsweep.analysis.groups import (
    base_trend,
    data_groups,
    default_pairs,
    group_membership,
    group_units,
    pt_ft_groups,
)
from ckptsweep.analysis.headline import json_safe, summary
from ckptsweep.analysis.mrc import mrc_cross_task, mrc_format, mrc_ood, paired_changes
from ckptsweep.analysis.names import EXTRA_TABLES, TABLE_NAMES
from ckptsweep.analysis.performance import forgetting, format_perf, ft_vs_base, stage_perf
from ckptsweep.analysis.settings import boot_args, read_settings
from ckptsweep.files import atomic_write


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
    cfg = read_settings(analysis_cfg)
    boot, shots, fmt = boot_args(cfg), cfg["shots"], cfg["format"]
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


# ---------------------------------------------------------------- files

def write_table(out: Path, name: str, df: pd.DataFrame) -> list[Path]:
    """``{name}.csv`` and its ``.html`` twin for the report, each written atomically."""
    return [atomic_write(out / f"{name}.csv", lambda p: df.to_csv(p, index=False)),
            atomic_write(out / f"{name}.html", lambda p: df.to_html(
                p, index=False, float_format=lambda x: f"{x:.4f}", na_rep="", border=0))]


def write_tables(scores: pd.DataFrame, examples: pd.DataFrame | None, analysis_cfg: Mapping,
                 out_dir: str | os.PathLike,
                 benchmarks: str | os.PathLike | None = None,
                 ablation: pd.DataFrame | None = None,
                 planned: Mapping[str, Mapping[str, float]] | None = None) -> list[Path]:
    """Write every table as ``{name}.csv`` + ``{name}.html`` and ``summary.json`` into
    ``out_dir`` (each file atomically); returns the paths written.

    Without ``examples`` the per-example tables are skipped (see ``compute_tables``). With
    ``benchmarks`` (a Snakemake benchmarks folder) ``gpu_hours.csv``/``.html`` are written
    too, GPUs per job from ``analysis_cfg["gpus_per_job"]`` (default ``GPUS_PER_JOB``),
    with the plan's columns beside them when ``planned`` is given (`cost.gpu_hours`);
    with ``ablation`` (the ablation's predictions) ``ablation.csv``/``.html``
    (`ablation_table`, bootstrap settings of ``analysis_cfg``)."""
    tables, headline = compute_tables(scores, examples, analysis_cfg)
    cfg = read_settings(analysis_cfg)
    out = Path(out_dir)
    paths = []
    for name, df in tables.items():
        paths += write_table(out, name, df)
    if benchmarks is not None:
        paths += write_table(out, "gpu_hours", gpu_hours(
            benchmarks, cfg["gpus_per_job"], cfg["models"] or None, cfg["finetune_gpus"],
            planned))
    if ablation is not None:
        paths += write_table(out, "ablation", ablation_table(ablation, **boot_args(cfg)))
    text = json.dumps(json_safe(headline), indent=2, allow_nan=False) + "\n"
    paths.append(atomic_write(out / "summary.json", lambda p: p.write_text(text, "utf-8")))
    return paths


def read_tables(tables_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The CSV tables written by ``write_tables``, by name (for figures and the report)."""
    d = Path(tables_dir)
    return {name: pd.read_csv(d / f"{name}.csv")
            for name in (*TABLE_NAMES, *EXTRA_TABLES) if (d / f"{name}.csv").exists()}

"""The checkpoint advisor end to end: `compute_advice` builds every table from what a
finished grid left (the scores, optionally the per-example scores, the base predictions,
``benchmarks/``, a bits-per-byte table, a proxy's scores, the transfer metrics);
`write_advice` writes the tables (``{name}.csv`` + ``.html``) and figures (PNG + SVG) of
``advisor_settings.ADVISOR_TABLES`` / ``ADVISOR_FIGURES``. ``ckptsweep advise`` and the
workflow's rules call these two with an `AdvisorSettings` built from the ``advisor``
config block (``AdvisorSettings.from_block``).

Without per-example scores (an imported release) the advice uses the normal test on the
intervals, and only the predictors the scores table holds (the step, the base few-shot
score) can be validated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.advisor import advise, build_panels
from ckptsweep.analysis.advisor_draws import Panel
from ckptsweep.analysis.advisor_figures import advice_figure, frontier_figure
from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.predictor_sources import (
    add_proxy,
    bpb_values,
    logprob_values,
    transfer_panels,
)
from ckptsweep.analysis.predictors import add_step, costs, measured_hours, pool, validate
from ckptsweep.analysis.tables import write_table


def compute_advice(scores: pd.DataFrame, settings: AdvisorSettings,
                   examples: pd.DataFrame | None = None,
                   predictions_dir: str | os.PathLike | None = None,
                   benchmarks: str | os.PathLike | None = None,
                   bpb: pd.DataFrame | None = None, proxy: pd.DataFrame | None = None,
                   transfer_metrics: pd.DataFrame | None = None,
                   gold_indices: Mapping[tuple[str, str], int] | None = None
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """(tables by name, notes). The per-example predictors (base log-probabilities from
    ``predictions_dir``, bits per byte from ``bpb``) need ``examples``: they are paired
    with the fine-tuned scores example by example."""
    notes: list[str] = []
    extra = []
    if examples is not None and predictions_dir is not None:
        extra.append(logprob_values(predictions_dir, gold_indices))
    if examples is not None and bpb is not None:
        extra.append(bpb_values(bpb))
    if examples is None and (predictions_dir is not None or bpb is not None):
        notes.append("base log-probability and bits-per-byte predictors need the "
                     "per-example scores (--examples): skipped")
    extra_df = pd.concat(extra, ignore_index=True) if extra else None
    panels = build_panels(scores, examples, settings, extra_df)
    advice, steps = advise(panels, settings, benchmarks)
    if proxy is not None:
        notes += add_proxy(panels, proxy, settings)
    all_panels: list[Panel] = list(panels)
    if transfer_metrics is not None:
        all_panels += transfer_panels(transfer_metrics, settings)
    add_step(all_panels)
    unit = costs(all_panels, scores, benchmarks, settings)
    # The proxy's own jobs in the same GPU-hour accounting (not with a unit of "jobs").
    measured = measured_hours(benchmarks, proxy, settings) if unit[2] != "jobs" else {}
    if proxy is not None:
        notes.append("proxy cost: " + ("measured from benchmarks/proxy"
                                       if "proxy_finetune" in measured else
                                       f"assumed, proxy_cost {settings.proxy_cost} x grid"))
    groups, cells = validate(all_panels, settings, unit[:2], measured)
    pooled = pool(all_panels, cells, settings)
    for df in (groups, pooled):
        if len(df):
            df["cost_basis"] = unit[2]
    for p in panels:
        notes += [f"{p.key['train_task']}/{p.key['role']}/{p.key['format']}/"
                  f"{p.key['shots']}/{p.key['metric']}: {n}" for n in p.notes]
    return {"advisor": advice, "advisor_steps": steps, "predictors": pooled,
            "predictors_groups": groups}, notes


def write_advice(tables: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every table (CSV + HTML) into ``out_dir`` and both figures into ``figures_dir``
    (default ``out_dir``; the workflow's ``results/figures``); the paths written."""
    out = Path(out_dir)
    figures = out if figures_dir is None else Path(figures_dir)
    paths = []
    for name, df in tables.items():
        paths += write_table(out, name, df)
    paths += advice_figure(tables["advisor_steps"], tables["advisor"], figures)
    paths += frontier_figure(tables["predictors"], figures)
    return paths

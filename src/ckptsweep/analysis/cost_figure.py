"""The GPU-hours figure: per rule, what the plan said against what the run measured
(``gpu_hours.csv``'s ``planned_gpu_hours`` beside ``gpu_hours``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def fig_gpu_hours(table: pd.DataFrame, out: Path, save, no_data) -> list[Path]:
    """Grouped bars, planned and measured GPU-hours per rule, the total last, with the
    measured/planned ratio over each pair; a "no data" note without a plan or runs.
    ``save`` and ``no_data``: `ckptsweep.analysis.figures`' writers (it calls this)."""
    import matplotlib.pyplot as plt

    df = table.copy()
    if "planned_gpu_hours" not in df:
        df["planned_gpu_hours"] = np.nan
    rows = df[(df["gpu_hours"].fillna(0) > 0) | (df["planned_gpu_hours"].fillna(0) > 0)]
    rows = pd.concat([rows[rows["rule"] != "total"], rows[rows["rule"] == "total"]])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.4))
    if rows.empty:
        no_data(fig, ax, "GPU-hours (no finished GPU job and no plan)")
        return save(fig, out, "gpu_hours")
    x = np.arange(len(rows))
    planned = rows["planned_gpu_hours"].to_numpy(dtype=float)
    measured = rows["gpu_hours"].to_numpy(dtype=float)
    ax.bar(x - 0.2, np.nan_to_num(planned), 0.4, label="planned (ckptsweep plan)",
           color="#9ecae1")
    ax.bar(x + 0.2, measured, 0.4, label="measured (benchmarks/)", color="#08519c")
    for i, (p, m) in enumerate(zip(planned, measured, strict=True)):
        if p > 0 and m > 0:
            ax.annotate(f"x{m / p:.2f}", (x[i], max(p, m)), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, rows["rule"], rotation=30, ha="right")
    ax.set_ylabel("GPU-hours")
    ax.set_yscale("log" if np.nanmax([*planned, *measured]) > 30 * np.nanmin(
        [v for v in [*planned, *measured] if v > 0] or [1]) else "linear")
    ax.set_title("GPU-hours per rule: plan against run")
    ax.legend(fontsize=7, frameon=False)
    return save(fig, out, "gpu_hours")

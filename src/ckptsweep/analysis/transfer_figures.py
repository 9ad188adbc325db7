"""Figures of the cross-stage transfer analysis, drawn from its tables (``transfer.py``).

- ``transfer_heatmap``: pre- vs post-SFT Spearman per benchmark / category x scale, for
  accuracy and confidence.
- ``transfer_ranks``: each member's pre-SFT rank against its post-SFT rank (accuracy), per
  benchmark and scale, coloured by mixture.
- ``transfer_reliability``: reliability diagrams (accuracy against confidence per
  confidence bin, members pooled) before and after SFT, per benchmark and scale.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ckptsweep.analysis.figures import _save  # noqa: E402
from ckptsweep.analysis.transfer_population import ALL  # noqa: E402

STAGE_COLORS = {"pre": "#0072B2", "post": "#D55E00"}


def _read(tables: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(tables / f"{name}.csv", keep_default_na=True)


def _scales(df: pd.DataFrame, column: str = "scale") -> list[str]:
    """Scale labels in table order, the pooled one last."""
    seen = [s for s in dict.fromkeys(df[column].astype(str)) if s != ALL]
    return seen + ([ALL] if (df[column].astype(str) == ALL).any() else [])


def fig_heatmap(corr: pd.DataFrame, out: Path) -> list[Path]:
    metrics = [m for m in ("accuracy", "confidence") if m in set(corr["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), squeeze=False)
    corr = corr.assign(scale=corr["scale"].astype(str))
    order = list(dict.fromkeys(corr["unit_type"] + ":" + corr["unit"]))
    for ax, metric in zip(axes[0], metrics, strict=True):
        c = corr[corr["metric"] == metric]
        grid = c.assign(row=c["unit_type"] + ":" + c["unit"]).pivot(
            index="row", columns="scale", values="spearman").reindex(
            index=order, columns=_scales(c))
        grid.index = [r.split(":", 1)[1] if r.startswith("benchmark:") else
                      f"[{r.split(':', 1)[1]}]" for r in grid.index]
        sns.heatmap(grid, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f",
                    cbar=ax is axes[0][-1], linewidths=0.5, annot_kws={"size": 8},
                    yticklabels=ax is axes[0][0])
        ax.set_title(metric)
        ax.set_xlabel("scale")
        ax.set_ylabel("benchmark / [category]" if ax is axes[0][0] else "")
    fig.suptitle("Spearman correlation, pre- vs post-SFT ranking of the members")
    fig.tight_layout()
    return _save(fig, out, "transfer_heatmap")


def fig_ranks(metrics: pd.DataFrame, corr: pd.DataFrame, out: Path,
              metric: str = "accuracy") -> list[Path]:
    m = metrics.assign(scale=metrics["scale"].astype(str), step=metrics["step"].astype(str))
    benches = list(dict.fromkeys(m["eval_set"]))
    scales = _scales(m)
    mixtures = sorted(m["mixture"].astype(str).unique())
    colors = dict(zip(mixtures, sns.color_palette("colorblind", len(mixtures)), strict=True))
    steps = sorted(m["step"].unique(), key=lambda s: (len(s), s))
    markers = dict(zip(steps, "osD^vP*X" * len(steps), strict=False))
    fig, axes = plt.subplots(len(scales), len(benches), figsize=(2.8 * len(benches),
                                                                 2.8 * len(scales)),
                             squeeze=False)
    for i, scale in enumerate(scales):
        for j, bench in enumerate(benches):
            ax = axes[i][j]
            g = m[(m["eval_set"] == bench) & (m["scale"] == scale)]
            w = g.pivot(index="member", columns="stage", values=metric)
            info = g.drop_duplicates("member").set_index("member")
            rank = w.rank(method="average", ascending=False)
            for member, r in rank.iterrows():
                ax.scatter(r["pre"], r["post"], color=colors[str(info.loc[member, "mixture"])],
                           marker=markers[info.loc[member, "step"]], s=28, edgecolor="black",
                           linewidth=0.3)
            n = len(rank)
            ax.plot([1, n], [1, n], color="grey", lw=0.7, ls="--")
            c = corr[(corr["unit_type"] == "benchmark") & (corr["unit"] == bench)
                     & (corr["scale"].astype(str) == scale) & (corr["metric"] == metric)]
            rho = c["spearman"].iloc[0] if len(c) else np.nan
            ax.set_title(f"{bench} ({scale})\nrho = {rho:.2f}", fontsize=9)
            ax.set_xlabel("pre-SFT rank" if i == len(scales) - 1 else "")
            ax.set_ylabel("post-SFT rank" if j == 0 else "")
            ax.invert_xaxis()
            ax.invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[k], label=k) for k in mixtures]
    handles += [plt.Line2D([], [], marker=markers[k], ls="", color="grey", label=f"step {k}")
                for k in steps]
    fig.tight_layout()
    fig.legend(handles=handles, title="mixture, checkpoint", loc="center left",
               bbox_to_anchor=(1.0, 0.5))
    return _save(fig, out, "transfer_ranks")


def fig_reliability(rel: pd.DataFrame, cal: pd.DataFrame, out: Path) -> list[Path]:
    rel = rel.assign(scale=rel["scale"].astype(str))
    cal = cal.assign(scale=cal["scale"].astype(str))
    benches = list(dict.fromkeys(rel["eval_set"]))
    scales = [s for s in _scales(rel) if s != ALL] or [ALL]
    fig, axes = plt.subplots(len(scales), len(benches), figsize=(2.8 * len(benches),
                                                                 2.8 * len(scales)),
                             squeeze=False, sharex=True, sharey=True)
    for i, scale in enumerate(scales):
        for j, bench in enumerate(benches):
            ax = axes[i][j]
            ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls="--")
            for stage, color in STAGE_COLORS.items():
                g = rel[(rel["eval_set"] == bench) & (rel["scale"] == scale)
                        & (rel["stage"] == stage) & (rel["n"] > 0)]
                e = cal[(cal["eval_set"] == bench) & (cal["scale"] == scale)
                        & (cal["stage"] == stage)]["ece"]
                label = f"{stage} (ECE {e.iloc[0]:.2f})" if len(e) else stage
                ax.plot(g["confidence"], g["accuracy"], marker="o", ms=3, color=color,
                        label=label)
            ax.set_title(f"{bench} ({scale})", fontsize=9)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence" if i == len(scales) - 1 else "")
            ax.set_ylabel("accuracy" if j == 0 else "")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, out, "transfer_reliability")


def write_figures(tables: str | Path, out: str | Path) -> list[Path]:
    """Every transfer figure (PNG + SVG) in ``out`` from the tables in ``tables``."""
    tables, out = Path(tables), Path(out)
    corr = _read(tables, "transfer_correlation")
    return [*fig_heatmap(corr, out),
            *fig_ranks(_read(tables, "transfer_metrics"), corr, out),
            *fig_reliability(_read(tables, "transfer_reliability"),
                             _read(tables, "transfer_calibration"), out)]

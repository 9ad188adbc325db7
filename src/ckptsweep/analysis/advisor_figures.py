"""The checkpoint advisor's figures (PNG + SVG), drawn from its tables, never recomputed:

- ``advisor``: per group, the fine-tuned score at each checkpoint with its interval, the
  non-inferiority margin (best - epsilon, dotted), the best (star), the earliest
  non-inferior checkpoint (ringed) and the last (square); non-inferior checkpoints are
  filled, the others hollow. In-domain groups first; at most ``MAX_PANELS`` panels (the
  table has every group).
- ``advisor_frontier``: the compute-decision frontier: each predictor's pooled decision
  accuracy (with its interval) against the GPU hours it costs as a fraction of the full
  grid's, one panel per role x format x shots; chance (0.5) dashed, the full grid at
  (1, 1).

An empty table still gives a figure (with a "no data" note), so the paths always exist.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ckptsweep.analysis.advisor_settings import ROLES
from ckptsweep.analysis.figures import BASE_COLOR, NCOLS, ROLE_TITLES, _save, _step_label

MAX_PANELS = 16
GROUP_COLS = ["model", "train_task", "lr", "role", "format", "shots", "metric", "eval_sets"]
ROLE_ORDER = (*ROLES, "transfer")


def _role_rank(role: str) -> int:
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)


def _grid(n: int, width: float = 4.0, height: float = 3.2):
    cols = max(1, min(NCOLS, n))
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _linear_steps(ax, steps) -> None:
    """A linear step axis (the decision is about the late checkpoints, which a log axis
    squeezes together); a tick too close to the previous labelled one stays unlabelled."""
    steps = sorted({int(s) for s in steps})
    span = max(steps[-1] - steps[0], 1)
    labels, last = [], None
    for s in steps:
        close = last is not None and (s - last) < 0.04 * span
        labels.append("" if close else _step_label(s))
        last = last if close else s
    ax.set_xticks(steps)
    ax.set_xticklabels(labels, rotation=45, fontsize=8)
    ax.set_xlabel("pre-training step")


def _empty(out: Path, name: str, what: str) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center")
    return _save(fig, out, name)


def advice_figure(steps: pd.DataFrame, advice: pd.DataFrame, out: Path,
                  name: str = "advisor") -> list[Path]:
    """The per-group figure from ``advisor_steps`` and ``advisor`` (see the module doc)."""
    if steps.empty:
        return _empty(out, name, "no group with two or more checkpoints")
    adv = advice.assign(_r=advice["role"].map(_role_rank)).sort_values(
        ["_r", "model", "train_task", "format", "shots", "metric"], kind="stable")
    shown = adv.head(MAX_PANELS)
    fig, axes = _grid(len(shown))
    for ax, (_, a) in zip(axes, shown.iterrows(), strict=False):
        sel = np.ones(len(steps), dtype=bool)
        for k in GROUP_COLS:
            sel &= (steps[k].astype(str) == str(a[k])).to_numpy()
        g = steps[sel].sort_values("step")
        x, v = g["step"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float)
        err = np.vstack([v - g["ci_low"].to_numpy(dtype=float),
                         g["ci_high"].to_numpy(dtype=float) - v])
        ax.errorbar(x, v, yerr=np.nan_to_num(err), color="0.3", lw=1, capsize=2, zorder=1)
        ni = g["noninferior"].to_numpy(dtype=bool)
        ax.scatter(x[ni], v[ni], color="C0", zorder=2, label="non-inferior")
        ax.scatter(x[~ni], v[~ni], facecolors="white", edgecolors="C0", zorder=2,
                   label="inferior")
        ax.axhline(a["best_value"] - a["epsilon"], color="0.5", ls=":", lw=1,
                   label="best - epsilon")
        for flag, style in (("is_best", {"marker": "*", "s": 180, "color": "C3"}),
                            ("is_earliest", {"marker": "o", "s": 160, "facecolors": "none",
                                             "edgecolors": "C2", "linewidths": 2}),
                            ("is_last", {"marker": "s", "s": 70, "facecolors": "none",
                                         "edgecolors": BASE_COLOR, "linewidths": 2})):
            m = g[flag].to_numpy(dtype=bool)
            ax.scatter(x[m], v[m], zorder=3, label=flag.removeprefix("is_"), **style)
        _linear_steps(ax, g["step"])
        ax.set_title(f"{a['train_task']}: {ROLE_TITLES.get(a['role'], a['role'])}, "
                     f"{a['format']} {a['shots']}-shot\nregret {a['regret']:.3f} "
                     f"[{a['regret_low']:.3f}, {a['regret_high']:.3f}] ({a['test']})",
                     fontsize=9)
        ax.set_ylabel(a["metric"])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    note = f" (first {MAX_PANELS} of {len(adv)} groups)" if len(adv) > MAX_PANELS else ""
    fig.suptitle(f"Fine-tuned score by checkpoint: epsilon {advice['epsilon'].iloc[0]}, "
                 f"alpha {advice['alpha'].iloc[0]}{note}")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return _save(fig, out, name)


def frontier_figure(pooled: pd.DataFrame, out: Path,
                    name: str = "advisor_frontier") -> list[Path]:
    """Decision accuracy against cost fraction per predictor (see the module doc)."""
    pooled = pooled.dropna(subset=["decision_accuracy"]) if len(pooled) else pooled
    if pooled.empty:
        return _empty(out, name, "no predictor could be validated")
    keys = pooled.assign(_r=pooled["role"].map(_role_rank)).sort_values(
        ["_r", "format", "shots"], kind="stable")[["role", "format", "shots"]]
    keys = keys.drop_duplicates().head(MAX_PANELS)
    fig, axes = _grid(len(keys), 4.4, 3.6)
    for ax, (_, k) in zip(axes, keys.iterrows(), strict=False):
        g = pooled[(pooled["role"] == k["role"]) & (pooled["format"] == k["format"])
                   & (pooled["shots"] == k["shots"])]
        for i, r in enumerate(g.itertuples()):
            lo, hi = r.decision_accuracy_low, r.decision_accuracy_high
            yerr = None if np.isnan(lo) else [[r.decision_accuracy - lo],
                                              [hi - r.decision_accuracy]]
            ax.errorbar(r.cost_fraction, r.decision_accuracy, yerr=yerr, fmt="o",
                        color="0.2" if r.predictor == "step" else f"C{i % 10}", capsize=3)
            ax.annotate(f"{r.predictor} ({r.n_groups})", (r.cost_fraction, r.decision_accuracy),
                        textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.scatter([1.0], [1.0], marker="D", color="k")
        ax.annotate("full grid", (1.0, 1.0), textcoords="offset points", xytext=(-40, -12),
                    fontsize=7)
        ax.axhline(0.5, color="0.6", ls="--", lw=1)
        ax.set_xlim(-0.05, 1.1)
        ax.set_ylim(-0.05, 1.08)
        ax.set_xlabel("GPU hours / full grid's")
        ax.set_ylabel("decision accuracy")
        ax.set_title(f"{ROLE_TITLES.get(k['role'], k['role'])}, {k['format']} "
                     f"{k['shots']}-shot", fontsize=9)
    basis = pooled["cost_basis"].iloc[0] if "cost_basis" in pooled else "?"
    fig.suptitle("Compute-decision frontier (pairs ordered as after fine-tuning; in "
                 f"brackets: groups; cost basis: {basis})")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, out, name)

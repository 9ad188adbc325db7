"""Figures of the study (PNG + SVG), drawn from the analysis tables.

Error bars are always the tables' ci_low/ci_high (seeded bootstrap), never recomputed.
Base models are drawn dashed orange and fine-tuned models solid, as in the paper.
A figure with more than ``MAX_PANELS`` panels continues in ``{name}-2.png`` and so on; a
figure without data, or whose tables are missing (an imported scores file has no
per-example tables), is still written (with a "no data" note) so its path always exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display, also inside Slurm jobs

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from ckptsweep.analysis.names import FIGURE_NAMES  # noqa: E402
from ckptsweep.analysis.tables import read_tables  # noqa: E402
from ckptsweep.files import atomic_write  # noqa: E402

MAX_PANELS = 12
NCOLS = 4
BASE_COLOR = "#E69F00"
ROLE_TITLES = {"id": "in-domain", "ood": "out-of-domain", "benchmark": "benchmarks",
               "cross-task": "cross-task"}


def _step_label(step: int) -> str:
    return f"{step // 1000}k" if step >= 1000 and step % 1000 == 0 else str(step)


def _steps_axis(ax, steps) -> None:
    """Log-like x axis (checkpoints are spread over orders of magnitude), labelled ticks."""
    steps = sorted({int(s) for s in steps})
    positive = [s for s in steps if s > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_xscale("symlog", linthresh=min(positive))
        # symlog's automatic margins reach down to 0; pad by a constant factor instead.
        ax.set_xlim(min(steps) / 1.4 if min(steps) > 0 else -min(positive) * 0.2,
                    max(steps) * 1.4)
    ax.set_xticks(steps)
    ax.set_xticklabels([_step_label(s) for s in steps], rotation=45, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("pre-training step")


def _errorline(ax, df: pd.DataFrame, y: str = "value", **style) -> None:
    """A line over steps with error bars from ci_low/ci_high (missing bounds: no bar)."""
    df = df.sort_values("step")
    x, v = df["step"].astype(float), df[y].to_numpy(dtype=float)
    lo = np.nan_to_num(v - df["ci_low"].to_numpy(dtype=float), nan=0.0)
    hi = np.nan_to_num(df["ci_high"].to_numpy(dtype=float) - v, nan=0.0)
    ax.errorbar(x, v, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=2, markersize=4,
                linewidth=1.5, elinewidth=0.8, **style)


def _pages(keys: list) -> list[list]:
    return [keys[i:i + MAX_PANELS] for i in range(0, len(keys), MAX_PANELS)] or [[]]


def _grid(n: int):
    ncols = min(NCOLS, max(n, 1))
    nrows = -(-max(n, 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:max(n, 1)])


def _no_data(fig, ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no data for {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _save(fig, out: Path, name: str) -> list[Path]:
    """PNG and SVG, each written atomically; SVG without a date and with fixed ids, so a
    rerun on the same tables gives the same file."""
    paths = []
    with plt.rc_context({"svg.hashsalt": "ckptsweep"}):
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            paths.append(atomic_write(out / f"{name}.{ext}", lambda p, e=ext, m=meta: fig.savefig(
                p, format=e, dpi=150, bbox_inches="tight", metadata=m)))
    plt.close(fig)
    return paths


def _legend(fig, axes) -> None:
    """One figure legend from the union of the panels' labelled artists."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        # Below the panels: never over a title, and bbox_inches="tight" keeps it in the file.
        fig.legend(handles.values(), handles.keys(), loc="upper center", frameon=False,
                   ncol=min(len(handles), 5), bbox_to_anchor=(0.5, 0.0))


def _ft_label(df: pd.DataFrame, task, lr) -> str:
    """Fine-tune line label: the task, plus the learning rate where a task has several."""
    several = df.loc[df["train_task"] == task, "lr"].nunique() > 1
    return f"FT {task}" + (f" (lr {lr:g})" if several else "")


def _panel_title(model, eval_set, n_models: int) -> str:
    return f"{eval_set}" if n_models == 1 else f"{model}: {eval_set}"


def fig_perf_steps(perf: pd.DataFrame, role: str, out: Path, name: str) -> list[Path]:
    """Base vs fine-tuned per checkpoint, one panel per eval set (paper Figs 3, 7, 9-13)."""
    ft = perf[(perf["stage"] == "fine-tuned") & (perf["role"] == role)]
    base = perf[perf["stage"] == "base"]
    keys = sorted(ft.groupby(["model", "eval_set"]).groups)
    n_models = perf["model"].nunique()
    # The colour-blind palette without its orange-like colours, which the base line uses.
    palette = [c for i, c in enumerate(sns.color_palette("colorblind")) if i not in (1, 3, 5, 8)]
    tasks = sorted(ft[["train_task", "lr"]].drop_duplicates().itertuples(index=False))
    color = {t: palette[i % len(palette)] for i, t in enumerate(tasks)}
    paths = []
    for page, panel_keys in enumerate(_pages(keys), start=1):
        fig, axes = _grid(len(panel_keys))
        if not panel_keys:
            _no_data(fig, axes[0], f"{ROLE_TITLES[role]} sets")
        for ax, (model, eval_set) in zip(axes, panel_keys, strict=False):
            b = base[(base["model"] == model) & (base["eval_set"] == eval_set)]
            _errorline(ax, b, color=BASE_COLOR, linestyle="--", marker="o", label="base")
            f = ft[(ft["model"] == model) & (ft["eval_set"] == eval_set)]
            for (task, lr), fl in f.groupby(["train_task", "lr"], sort=True):
                _errorline(ax, fl, color=color[(task, lr)], marker="s",
                           label=_ft_label(ft, task, lr))
            _steps_axis(ax, pd.concat([b["step"], f["step"]]))
            ax.set_title(_panel_title(model, eval_set, n_models), fontsize=10)
            ax.set_ylabel(f["metric"].iloc[0] if len(f) else "")
        _legend(fig, axes)
        fig.suptitle(f"Base vs fine-tuned across pre-training: {ROLE_TITLES[role]}")
        fig.tight_layout()
        paths += _save(fig, out, name if page == 1 else f"{name}-{page}")
    return paths


def fig_base_steps(perf: pd.DataFrame, trend: pd.DataFrame, out: Path) -> list[Path]:
    """Base few-shot score per checkpoint, one panel per base-trend verdict (paper Fig. 2)."""
    base = perf[perf["stage"] == "base"]
    verdict = trend.set_index(["model", "eval_set"])["verdict"]
    base = base.assign(verdict=[verdict.get((m, e), "flat")
                                for m, e in zip(base["model"], base["eval_set"], strict=True)])
    panels = [v for v in ("rises", "flat", "falls") if (base["verdict"] == v).any()]
    fig, axes = _grid(len(panels))
    if not panels:
        _no_data(fig, axes[0], "base models")
    n_models = base["model"].nunique()
    for ax, v in zip(axes, panels, strict=False):
        sub = base[base["verdict"] == v]
        keys = sorted(sub.groupby(["model", "eval_set"]).groups)
        palette = sns.color_palette("husl", len(keys))
        for color, (model, eval_set) in zip(palette, keys, strict=True):
            line = sub[(sub["model"] == model) & (sub["eval_set"] == eval_set)]
            _errorline(ax, line, color=color, marker="o",
                       label=_panel_title(model, eval_set, n_models))
        _steps_axis(ax, sub["step"])
        ax.set_title(f"base score {v} across pre-training", fontsize=10)
        ax.set_ylabel("score")
        ax.legend(fontsize=7, framealpha=0.85)
    fig.tight_layout()
    return _save(fig, out, "base_steps")


def fig_group_gain(design: pd.DataFrame, data: pd.DataFrame, out: Path) -> list[Path]:
    """Mean fine-tuning gain per group and checkpoint (paper Fig. 4 / Table 5)."""
    panels = [(t, df, m) for t, df in (("groups by design", design), ("groups by data", data))
              for m in sorted(df["model"].unique())]
    fig, axes = _grid(len(panels))
    if not panels:
        _no_data(fig, axes[0], "group gains")
    colors = {"pretraining": BASE_COLOR, "finetuning": "#009E73"}
    for ax, (title, df, model) in zip(axes, panels, strict=False):
        df = df[df["model"] == model]
        per_step = df[df["step"].astype(str) != "all"].astype({"step": int})
        for group, g in per_step.groupby("group", sort=True):
            overall = df[(df["group"] == group) & (df["step"].astype(str) == "all")].iloc[0]
            label = (f"{group}: all {overall['raw_change']:+.3f} "
                     f"[{overall['ci_low']:+.3f}, {overall['ci_high']:+.3f}]")
            ax.plot(g["step"], g["raw_change"], marker="o", label=label,
                    color=colors.get(group))
        ax.axhline(0, color="grey", linewidth=0.8)
        _steps_axis(ax, per_step["step"])
        ax.set_title(title if len(panels) <= 2 else f"{model}: {title}", fontsize=10)
        ax.set_ylabel("mean gain (FT - base)")
        ax.legend(fontsize=7, framealpha=0.85)
    fig.tight_layout()
    return _save(fig, out, "group_gain")


def fig_formats(fperf: pd.DataFrame, out: Path) -> list[Path]:
    """Per in-domain set: one colour per prompt format, base dashed, fine-tuned solid
    (paper Fig. 5 / 14)."""
    keys = sorted(fperf.groupby(["model", "eval_set"]).groups)
    formats = sorted(fperf["format"].unique())
    color = dict(zip(formats, sns.color_palette("colorblind", len(formats)), strict=True))
    n_models = fperf["model"].nunique()
    paths = []
    for page, panel_keys in enumerate(_pages(keys), start=1):
        fig, axes = _grid(len(panel_keys))
        if not panel_keys:
            _no_data(fig, axes[0], "prompt formats")
        for ax, (model, eval_set) in zip(axes, panel_keys, strict=False):
            sub = fperf[(fperf["model"] == model) & (fperf["eval_set"] == eval_set)]
            for (fmt, stage, _task, _lr), g in sub.groupby(
                    ["format", "stage", "train_task", "lr"], dropna=False, sort=True):
                base = stage == "base"
                _errorline(ax, g, color=color[fmt], linestyle="--" if base else "-",
                           marker="o" if base else "s", label=f"{fmt} {stage}")
            _steps_axis(ax, sub["step"])
            ax.set_title(_panel_title(model, eval_set, n_models), fontsize=10)
            ax.set_ylabel(sub["metric"].iloc[0])
        _legend(fig, axes)
        fig.suptitle("Prompt formats on the in-domain sets (base dashed, fine-tuned solid)")
        fig.tight_layout()
        paths += _save(fig, out, "formats" if page == 1 else f"formats-{page}")
    return paths


def _bars(ax, df: pd.DataFrame, x: str, hue: str | None, y: str = "mrc",
          palette: list | None = None) -> None:
    """Grouped bars of ``y`` (default MRC) with interval whiskers; y as a percentage. Drawn
    with matplotlib so each whisker sits on its own row's bar (seaborn cannot take given
    CIs). ``palette``: one colour per hue level (default the colour-blind palette)."""
    cats = list(dict.fromkeys(df[x]))
    levels = list(dict.fromkeys(df[hue])) if hue else [None]
    palette = palette or sns.color_palette("colorblind", len(levels))
    width = 0.8 / len(levels)
    for j, (level, color) in enumerate(zip(levels, palette, strict=True)):
        sub = df if hue is None else df[df[hue] == level]
        pos = np.array([cats.index(c) for c in sub[x]]) - 0.4 + width * (j + 0.5)
        v = sub[y].to_numpy(dtype=float)
        err = [np.maximum(v - sub["ci_low"].to_numpy(dtype=float), 0),
               np.maximum(sub["ci_high"].to_numpy(dtype=float) - v, 0)]
        ax.bar(pos, v, width=width * 0.95, color=color, label=level)
        ax.errorbar(pos, v, yerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3,
                    linewidth=1)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, fontsize=8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("mean ratio of change")
    if hue:
        ax.legend(fontsize=7, framealpha=0.85, title=hue, title_fontsize=7)


def fig_mrc_ood(mrc: pd.DataFrame, out: Path) -> list[Path]:
    """MRC on each task's OOD sets, per OOD set, averaged over checkpoints (paper Fig. 8)."""
    sets = mrc[(mrc["eval_set"] != "all") & mrc["mrc"].notna()]
    models = sorted(sets["model"].unique())
    fig, axes = _grid(len(models))
    if not models:
        _no_data(fig, axes[0], "OOD sets")
    for ax, model in zip(axes, models, strict=False):
        _bars(ax, sets[sets["model"] == model], "train_task", "eval_set")
        ax.set_xlabel("fine-tuning task")
        ax.set_title("OOD change after fine-tuning" + ("" if len(models) == 1 else f": {model}"),
                     fontsize=10)
    fig.tight_layout()
    return _save(fig, out, "mrc_ood")


def fig_mrc_cross_task(mrc: pd.DataFrame, out: Path) -> list[Path]:
    """Task-transfer MRC per direction with its interval (paper §6.2)."""
    mrc = mrc[mrc["mrc"].notna()]
    models = sorted(mrc["model"].unique())
    fig, axes = _grid(len(models))
    if not models:
        _no_data(fig, axes[0], "cross-task transfer")
    for ax, model in zip(axes, models, strict=False):
        sub = mrc[mrc["model"] == model]
        p = sub["p_value"].map(lambda v: "p < 0.001" if v < 0.001 else f"p = {v:.2g}")
        label = (sub["direction"].str.replace("->", "\n-> ", regex=False)
                 + "\n(n = " + sub["n"].astype(str) + ", " + p + ")")
        _bars(ax, sub.assign(direction=label), "direction", None)
        ax.set_xlabel("fine-tuned on -> evaluated on")
        ax.set_title("Cross-task change" + ("" if len(models) == 1 else f": {model}"),
                     fontsize=10)
    fig.tight_layout()
    return _save(fig, out, "mrc_cross_task")


def fig_ablation(ab: pd.DataFrame, out: Path) -> list[Path]:
    """Accuracy per prediction method, base vs each fine-tune, one panel per (model, eval
    set, shots) of the final checkpoint (the paper's Table 2 as bars)."""
    keys = sorted(ab.groupby(["model", "eval_set", "shots"]).groups)
    n_models = ab["model"].nunique()
    others = [c for i, c in enumerate(sns.color_palette("colorblind")) if i not in (1, 3, 5, 8)]
    paths = []
    for page, panel_keys in enumerate(_pages(keys), start=1):
        fig, axes = _grid(len(panel_keys))
        if not panel_keys:
            _no_data(fig, axes[0], "the method ablation")
        for ax, (model, eval_set, shots) in zip(axes, panel_keys, strict=False):
            sub = ab[(ab["model"] == model) & (ab["eval_set"] == eval_set)
                     & (ab["shots"] == shots)]
            levels = list(dict.fromkeys(sub["variant"]))  # base first (table order)
            fts = iter(others * len(levels))
            palette = [BASE_COLOR if v == "base" else next(fts) for v in levels]
            _bars(ax, sub, "method", "variant", y="accuracy", palette=palette)
            ax.get_legend().remove()  # one legend below the panels instead
            ax.set_ylabel("accuracy")
            ax.set_xlabel("prediction method")
            step = sub["step"].iloc[0]
            ax.set_title(f"{_panel_title(model, eval_set, n_models)} ({shots}-shot, "
                         f"step {_step_label(int(step))})", fontsize=10)
        _legend(fig, axes)
        fig.suptitle("Prediction methods: base vs fine-tuned at the final checkpoint")
        fig.tight_layout()
        paths += _save(fig, out, "ablation" if page == 1 else f"ablation-{page}")
    return paths


def _missing(out: Path, name: str, what: str) -> list[Path]:
    """A figure whose tables are missing: its files still exist, with a "no data" note."""
    fig, axes = _grid(1)
    _no_data(fig, axes[0], what)
    return _save(fig, out, name)


PERF_FIGURES = {f"perf_steps_{role.replace('-', '_')}": role for role in ROLE_TITLES}
"""Figure name -> role of the per-step figures."""
FIGURE_TABLES = {
    "base_steps": ("perf_steps", "base_trend"),
    **{name: ("perf_steps",) for name in PERF_FIGURES},
    "group_gain": ("pt_ft_groups",),
    "formats": ("format_perf",),
    "mrc_ood": ("mrc_ood",),
    "mrc_cross_task": ("mrc_cross_task",),
}
"""The tables each figure of ``FIGURE_NAMES`` is drawn from."""


def write_figures(tables: Mapping[str, pd.DataFrame] | str | os.PathLike,
                  out_dir: str | os.PathLike) -> list[Path]:
    """Every figure as PNG + SVG under ``out_dir``; ``tables`` is ``compute_tables``'s dict
    or the directory ``write_tables`` wrote. Returns the paths written.

    Every figure of ``FIGURE_NAMES`` is written: one whose tables are missing (tables of
    an imported scores file have no per-example tables) gets a "no data" note instead.
    ``ablation`` is drawn only when the ablation table is there, ``gpu_hours`` (planned
    against measured) only when the GPU-hours table is."""
    if not isinstance(tables, Mapping):
        tables = read_tables(tables)
    out = Path(out_dir)
    paths = []
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        for name in FIGURE_NAMES:
            missing = [t for t in FIGURE_TABLES[name] if t not in tables]
            if missing:
                paths += _missing(out, name, f"{name} (no table {', '.join(missing)})")
            elif name == "base_steps":
                paths += fig_base_steps(tables["perf_steps"], tables["base_trend"], out)
            elif name in PERF_FIGURES:
                paths += fig_perf_steps(tables["perf_steps"], PERF_FIGURES[name], out, name)
            elif name == "group_gain":
                design = tables["pt_ft_groups"]
                # Without per-example data only the groups by design are drawn.
                paths += fig_group_gain(design, tables.get("pt_ft_groups_data", design.iloc[:0]),
                                        out)
            elif name == "formats":
                paths += fig_formats(tables["format_perf"], out)
            elif name == "mrc_ood":
                paths += fig_mrc_ood(tables["mrc_ood"], out)
            else:
                paths += fig_mrc_cross_task(tables["mrc_cross_task"], out)
        if "ablation" in tables:
            paths += fig_ablation(tables["ablation"], out)
        if "gpu_hours" in tables:
            from ckptsweep.analysis.cost_figure import fig_gpu_hours

            paths += fig_gpu_hours(tables["gpu_hours"], out, _save, _no_data)
    return paths

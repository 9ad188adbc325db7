"""Fact-tracing table and figure: every method's MRR, precision and recall at k, per slice.

Reads the per-query metrics of every ``ckptsweep attribute`` job (``queries.csv`` and
``info.json`` in one folder per model and slice) and writes

- ``attribution.csv`` / ``.html``: one row per (model, slice, method) with MRR, P@k, R@k,
  each with a seeded 95 % bootstrap interval over the queries, plus how many facts
  qualified as learned and how long the job took;
- ``attribution.png`` / ``.svg``: MRR and R@10 per method with their intervals, one panel
  per (model, slice).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ckptsweep.attribution.protocol import KS, METHODS, summarize
from ckptsweep.files import atomic_write

METRICS = ["mrr"] + [f"p@{k}" for k in KS] + [f"r@{k}" for k in KS]


def load(dirs: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
    frames, infos = [], []
    for d in map(Path, dirs):
        frames.append(pd.read_csv(d / "queries.csv"))
        infos.append(json.loads((d / "info.json").read_text()))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return rows, infos


def table(dirs: list[Path], seed: int, n_boot: int) -> pd.DataFrame:
    """The wide table: one row per (model, slice, method)."""
    rows, infos = load(dirs)
    long = pd.DataFrame(summarize(rows.to_dict("records"), seed, n_boot)) if len(rows) else \
        pd.DataFrame(columns=["model", "slice", "method", "metric", "value", "ci_low",
                              "ci_high", "n"])
    out = []
    for info in infos:
        sub = long[(long["model"] == info["model"]) & (long["slice"] == info["slice"])]
        methods = [m for m in METHODS if m in set(sub["method"])]
        for m in methods or [None]:
            row = {"model": info["model"], "slice": info["slice"], "method": m,
                   "queries": info["n_queries"], "learned": info["n_learned"],
                   "facts": info["n_facts"], "candidates": info.get("n_candidates_mean"),
                   "job_seconds": round(info["seconds"], 1)}
            for metric in METRICS:
                r = sub[(sub["method"] == m) & (sub["metric"] == metric)]
                if len(r):
                    row[metric] = r["value"].iloc[0]
                    row[f"{metric}_low"] = r["ci_low"].iloc[0]
                    row[f"{metric}_high"] = r["ci_high"].iloc[0]
            out.append(row)
    return pd.DataFrame(out)


def write_table(df: pd.DataFrame, csv: Path, html: Path) -> None:
    atomic_write(csv, lambda p: df.to_csv(p, index=False, float_format="%.4f"))
    atomic_write(html, lambda p: df.to_html(p, index=False, float_format="%.3f",
                                            na_rep="", border=0))


def figure(df: pd.DataFrame, png: Path, svg: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(zip(df["model"], df["slice"], strict=True))) or [(None, None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (model, slc) in zip(axes[0], panels, strict=True):
        sub = df[(df["model"] == model) & (df["slice"] == slc) & df["method"].notna()]
        if "mrr" not in sub or sub["mrr"].isna().all():
            ax.text(0.5, 0.5, "no learned facts to trace", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        x = range(len(sub))
        for off, metric, color in ((-0.2, "mrr", "#4c72b0"), (0.2, "r@10", "#dd8452")):
            val = sub[metric].to_numpy()
            err = [val - sub[f"{metric}_low"].to_numpy(), sub[f"{metric}_high"].to_numpy() - val]
            ax.bar([i + off for i in x], val, width=0.4, yerr=err, capsize=2, color=color,
                   label=metric.upper().replace("R@", "Recall@"))
        ax.set_xticks(list(x), sub["method"], rotation=30, ha="right")
        ax.set_ylim(0, 1.22)
        n = int(sub["queries"].iloc[0])
        ax.set_title(f"{model}, {slc} slice ({n} queries)")
        ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    with plt.rc_context({"svg.hashsalt": "ckptsweep"}):
        atomic_write(png, lambda p: fig.savefig(p, format="png", dpi=150,
                                                metadata={"Software": None}))
        atomic_write(svg, lambda p: fig.savefig(p, format="svg", metadata={"Date": None}))
    plt.close(fig)

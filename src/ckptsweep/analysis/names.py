"""The names of the analysis outputs, defined once for the package and the rules.

Plain Python (no pandas or matplotlib): the workflow reads them at parse time, once per
Slurm job too. Each table is written as ``results/tables/{name}.csv`` and ``.html``; each
figure as ``results/figures/{name}.png`` and ``.svg``.
"""

TABLE_NAMES = ("mrc_cross_task", "mrc_ood", "mrc_format", "format_perf", "perf_steps",
               "pt_ft_groups", "pt_ft_groups_data", "group_membership", "base_trend",
               "ft_vs_base", "forgetting")
"""The AMURO & CHAR tables; ``summary.json`` comes with them."""
EXAMPLE_TABLES = ("format_perf", "perf_steps", "pt_ft_groups_data", "group_membership",
                  "base_trend", "ft_vs_base", "forgetting")
"""The tables that need per-example scores (skipped without them)."""
EXTRA_TABLES = ("gpu_hours", "ablation")
"""Tables beside the AMURO & CHAR ones: compute cost, and the method ablation (only with
an ``analysis.ablation`` block)."""
FIGURE_NAMES = ("base_steps", "perf_steps_id", "perf_steps_ood", "perf_steps_benchmark",
                "perf_steps_cross_task", "group_gain", "formats", "mrc_ood", "mrc_cross_task")
"""First file of each AMURO & CHAR figure; extra panels spill into ``{name}-2`` etc."""
ABLATION_METHODS = ("free", "constrained", "tokenprob", "loglik")
"""Default methods of the prediction-method ablation (the paper's Table 2, in its order)."""

TRANSFER_TABLES = ("transfer_metrics", "transfer_correlation", "transfer_benchmarks",
                   "transfer_agreement", "transfer_calibration", "transfer_scales",
                   "transfer_reliability")
"""The cross-stage transfer tables, with ``transfer_summary.json``."""
TRANSFER_FIGURES = ("transfer_heatmap", "transfer_ranks", "transfer_reliability")
"""The cross-stage transfer figures."""

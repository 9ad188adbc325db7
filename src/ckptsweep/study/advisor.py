"""The checkpoint advisor at parse time (config block ``advisor``): which models it advises,
the proxy fine-tune's jobs and their specs, the outputs of each mode, and the two phases
of the adaptive sweep. The rules of ``workflow/rules/advisor.smk`` call these through
one-line ``get_*`` wrappers in ``common.smk``.

- **retrospective** (default): on the finished full grid, one local ``advise`` rule writes
  the advice and the validated predictors (`ckptsweep.analysis.advisor_report`); with a
  ``proxy`` block, a ``proxy`` job per checkpoint runs the proxy fine-tunes of every
  advised task first (`ckptsweep.evaluate.proxy`), and ``proxy_scores`` turns their
  predictions into a scores-schema table.
- **adaptive**: the same proxy jobs on every checkpoint, then the Snakemake checkpoint
  ``adaptive_select`` ranks the checkpoints by the proxy (`ckptsweep.analysis.adaptive`)
  and the input function of ``adaptive_advice`` asks for the full fine-tunes and
  evaluations (the ordinary ``finetune`` and ``evaluate`` rules) of the selected ones.
  The last checkpoint is always fine-tuned, so its jobs are in the first phase already.
"""

from __future__ import annotations

import json
from pathlib import Path

from ckptsweep.data.tasks import task_type
from ckptsweep.study import grid, specs
from ckptsweep.study.config import AdaptiveBlock, Study

PROXY_KINDS = ("classification", "generation")
"""Task kinds a proxy fine-tune is scored on (a dev slice of the task's own records)."""
PROXY_SCORES = "results/advisor/proxy_scores.parquet"
SELECTION = "results/advisor/adaptive/selection.json"
ADAPTIVE_OUTPUTS = ("recommendation.json", "recommendation.csv", "recommendation.html")
"""Of the adaptive sweep's final rule, in ``results/advisor/adaptive/``."""
SETTINGS_ONLY = ("mode", "proxy", "adaptive", "bpb")
"""Keys of the ``advisor`` block that are not `AdvisorSettings`' (how the advisor runs)."""


def enabled(study: Study) -> bool:
    return study.advisor is not None


def adaptive(study: Study) -> bool:
    return study.advisor is not None and study.advisor.mode == "adaptive"


def models(study: Study) -> list[str]:
    """The advised models: ``analysis.models`` (default every model)."""
    return grid.analysis_models(study)


# ------------------------------------------------------------------ the proxy fine-tune

def proxy_finetunes(study: Study, model: str) -> list[grid.Finetune]:
    """One fine-tune per proxied training dataset of ``model`` (its first learning rate
    and seed): ``advisor.proxy.tasks``, default every classification and generation task
    the model is fine-tuned on. None without a ``proxy`` block."""
    proxy = study.advisor.proxy if study.advisor is not None else None
    if proxy is None:
        return []
    out: dict[str, grid.Finetune] = {}
    for f in grid.finetunes(study, model):
        if f.dataset in out or task_type(f.task).kind not in PROXY_KINDS:
            continue
        if proxy.tasks is None or f.dataset in proxy.tasks:
            out[f.dataset] = f
    return list(out.values())


def proxy_models(study: Study) -> list[str]:
    """Advised models with at least one proxied task."""
    return [m for m in models(study) if proxy_finetunes(study, m)]


def proxy_folder(model: str, step: str) -> str:
    """One checkpoint's proxy predictions: ``{variant}.parquet`` per task, ``proxy.json``."""
    return f"results/advisor/proxy/{model}/{step}"


def proxy_folders(study: Study) -> list[str]:
    return [proxy_folder(m, s) for m in proxy_models(study) for s in grid.steps(study, m)]


def dev_set(dataset: str) -> str:
    """The eval-set name of a task's proxy dev slice (held out of its training split)."""
    return f"{dataset}__dev"


def proxy_input(study: Study, model: str, step: str) -> dict:
    """The checkpoint's manifest and the training splits of its proxied tasks (the rule
    adds a hub checkpoint's download)."""
    return {"manifest": specs.manifest(model, step),
            "train": sorted({specs.data(f.dataset, "train")
                             for f in proxy_finetunes(study, model)})}


def proxy(study: Study, model: str, step: str) -> str:
    """The ``ckptsweep proxy`` job's spec: the proxy settings (as written), the evaluation
    block, and per task its variant name, training file and full fine-tune settings (the
    spec ``ckptsweep finetune`` gets: the proxy scales its epochs down)."""
    block = {k: v for k, v in study.raw["advisor"]["proxy"].items() if k != "tasks"}
    tasks = [{"variant": f.name, "dataset": f.dataset, "dev_set": dev_set(f.dataset),
              "train": specs.data(f.dataset, "train"),
              "finetune": json.loads(specs.finetune(study, model, f.name))}
             for f in sorted(proxy_finetunes(study, model), key=lambda f: f.name)]
    return specs.jsonarg({"step": step, "proxy": block, "tasks": tasks,
                          "evaluation": specs.evaluation(study)})


def proxy_runs(study: Study) -> str:
    """The proxy predictions' provenance and their dev sets (role ``id`` of their task),
    for the aggregation into a scores-schema table (`ckptsweep.analysis.scores`)."""
    runs, sets = [], {}
    p = study.advisor.proxy
    for model in proxy_models(study):
        for f in proxy_finetunes(study, model):
            kind = task_type(f.task).kind
            sets[dev_set(f.dataset)] = {"task": f.task, "kind": kind, "of": f.dataset,
                                        "role_in": "id", "formats": list(p.formats),
                                        "n": p.dev_size}
            for step in grid.steps(study, model):
                runs.append({"path": f"{proxy_folder(model, step)}/{f.name}.parquet",
                             "model": model, "step": step, "variant": f.name,
                             "train_task": f.dataset, "train_kind": kind, "lr": f.lr,
                             "seed": f.seed})
    runs.sort(key=lambda r: r["path"])  # canonical: config order is no change
    return specs.jsonarg({"runs": runs, "eval_sets": sets})


def proxy_manifests(study: Study) -> list[str]:
    return [specs.manifest(m, s) for m in proxy_models(study) for s in grid.steps(study, m)]


# ------------------------------------------------------------------ bits per byte

def bpb_sets(study: Study, model: str) -> dict[str, list[str]]:
    """Generation eval sets the base model of ``model`` is evaluated on -> formats (none
    without ``advisor.bpb``, or in adaptive mode, where nothing reads them)."""
    if not enabled(study) or not study.advisor.bpb or adaptive(study):
        return {}
    return {name: formats for name, formats in grid.eval_plan(study, "base", model).items()
            if task_type(study.datasets[name].task).kind == "generation"}


def bpb_file(model: str, step: str) -> str:
    return f"results/advisor/bpb/{model}/{step}.parquet"


def bpb_files(study: Study) -> list[str]:
    return [bpb_file(m, s) for m in models(study) if bpb_sets(study, m)
            for s in grid.steps(study, m)]


def bpb_input(study: Study, model: str, step: str) -> dict:
    return {"manifest": specs.manifest(model, step),
            "data": [specs.data(name, split) for name in bpb_sets(study, model)
                     for split in ("train", "test")]}


def bpb(study: Study, model: str, step: str) -> str:
    """The ``ckptsweep bpb`` job's spec: the sets and formats the base is evaluated in,
    the evaluation block (its prompts, demonstrations and shots)."""
    sets = [specs.eval_set(study, name, formats)
            for name, formats in sorted(bpb_sets(study, model).items())]
    return specs.jsonarg({"model": model, "step": step, "sets": sets,
                          "evaluation": specs.evaluation(study)})


# ------------------------------------------------------------------ retrospective advice

def settings(study: Study) -> str:
    """The `AdvisorSettings` part of the block, as written (``ckptsweep advise --spec``)."""
    return specs.jsonarg({k: v for k, v in study.raw["advisor"].items()
                          if k not in SETTINGS_ONLY})


def targets(study: Study) -> list[str]:
    """The retrospective advice's outputs (none without the block, or in adaptive mode)."""
    from ckptsweep.analysis.advisor_settings import ADVISOR_FIGURES, ADVISOR_TABLES

    if not enabled(study) or adaptive(study):
        return []
    return [*(f"results/tables/{n}.{ext}" for n in ADVISOR_TABLES for ext in ("csv", "html")),
            *(f"results/figures/{n}.{ext}" for n in ADVISOR_FIGURES for ext in ("png", "svg"))]


def proxy_scores(study: Study) -> list[str]:
    return [PROXY_SCORES] if proxy_models(study) else []


def transfer_metrics(study: Study) -> list[str]:
    """The transfer population's metrics (its predictors), with a ``transfer`` block."""
    return ["results/tables/transfer_metrics.csv"] if study.transfer is not None else []


def gold_files(study: Study) -> dict[str, str]:
    """Multiple-choice eval sets of the advised models -> test file (gold choice indices,
    for the base log-probability predictors)."""
    out = {}
    for model in models(study):
        for name in specs.evaluated_sets(study, model):
            if task_type(study.datasets[name].task).kind == "multiple_choice":
                out[name] = specs.data(name, "test")
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ the adaptive sweep

def adaptive_targets() -> list[str]:
    return [f"results/advisor/adaptive/{name}" for name in ADAPTIVE_OUTPUTS]


def adaptive_spec(study: Study) -> str:
    """What the selection and the report read: k, the predictor, every advised model's
    checkpoints (ascending), the full grid's study folder."""
    a = study.advisor.adaptive or AdaptiveBlock()
    return specs.jsonarg({"k": a.k, "predictor": a.predictor, "full_grid": a.full_grid,
                          "models": {m: sorted(int(s) for s in grid.steps(study, m))
                                     for m in models(study)}})


def last_predictions(study: Study) -> list[str]:
    """The evaluations of every advised model's last checkpoint: always fine-tuned, so in
    the first phase already."""
    return [f"results/predictions/{m}/{grid.final_step(study, m)}" for m in models(study)]


def selected_steps(selection: str | Path) -> dict[str, list[int]]:
    """Model -> the checkpoints the selection fine-tunes (the top k and the last)."""
    data = json.loads(Path(selection).read_text())
    return {m: [int(s) for s in v["steps"]] for m, v in data["models"].items()}


def selected_predictions(selection: str | Path) -> list[str]:
    """The evaluation folders of the selected checkpoints (the second phase)."""
    return [f"results/predictions/{m}/{s}" for m, steps in selected_steps(selection).items()
            for s in steps]


def runs(study: Study) -> str:
    """The provenance of the advised models' predictions files (the report keeps those of
    the checkpoints that ran)."""
    return specs.runs(study)

"""Import the AMURO & CHAR authors' released results into the scores-table schema.

The authors (Sun & Dredze) released two tables of OLMo-1B-hf results (Apache-2.0; a copy
with its NOTICE is under ``tests/data/amurochar/``):

- ``all_perf_table.csv`` (columns ``,model_id,eval dataset,Performance,std``): base and
  supervised-fine-tuned checkpoints on the SFT eval sets, in three prompt formats;
- ``official_eval_table.csv`` (``,model_id,eval dataset,Performance``): base and
  Tulu-instruction-tuned checkpoints on OLMo's own benchmark suite.

``import_release`` turns both into one table with exactly ``scores.SCORES_COLUMNS``, every
field parsed out of ``model_id`` and ``eval dataset``; an id or eval name that matches no
known pattern fails with the file, the line and the id. The table then feeds
``tables.write_tables`` (``ckptsweep tables --scores ...``) like the workflow's own scores.

Field by field:

- ``model`` is ``OLMo-1B-hf``. ``step`` is the pre-training step; the final checkpoint
  (the hub's ``main``, ids ``olmo1b_original_hf...`` and ``olmo1b_hf_main_...``) is step
  738020, the real last step of OLMo-1B-hf (its last revision is ``step738020-tokens3094B``),
  so it sorts after 738000; ``STEP_LABELS`` / ``step_label`` turn it back into "main".
  ``tokens`` is step x 4,194,304 (OLMo-1B's batch of 2048 sequences x 2048 tokens).
- ``variant`` is ``base`` or ``{task}-lr{lr}-{E}ep`` (for example ``mnli-lr2e-6-3ep``);
  ``seed`` is unknown (NA): the authors ran one fine-tune per configuration.
- ``eval_set``: the release's name without its format suffix (``{d}``, ``{d}_instruct``,
  ``{d}_inputoutput`` -> format default / instruct / io). Ids are unique across roles:
  SciQ as question generation (OOD of SocialIQa, ROUGE-L) is ``sciq_qg`` and SciQ as a
  multiple-choice benchmark is ``sciq_mc``; likewise the official suite's base-only RTE and
  QQP rows are ``rte_mc`` and ``qqp_mc``, apart from the SFT sets ``rte`` and ``qqp``.
- ``role`` follows the paper's Table 1 (``EVAL_SETS``, via ``scores.assign_role``): MNLI ->
  id mnli_matched, mnli_mismatched, OOD rte, gpt3nli; PAWS -> id paws, OOD qqp, stsb; XSum
  -> id xsum, xlsum, OOD cnn; SocialIQa -> id socialiqa, OOD sciq_qg, tweetqa. The official
  suite and LLMBar belong to no training task: "benchmark" for every fine-tune.
- ``value`` is the released ``Performance``. In ``all_perf_table.csv`` that is the midpoint
  of the authors' 95 % percentile bootstrap interval, not the sample mean that our own
  tables report (design.md): only what was released can be imported. ``ci_low``/``ci_high``
  are value -/+ 1.96 x ``std`` (the released standard error; a normal interval). The
  official table has no ``std`` and plain accuracies: NaN bounds. ``n`` is unknown (NA).
- ``shots``: the ``_{k}shots`` suffix, 0 without one. The official table gives no shot
  count; it is recorded as 0, the setting of OLMo's own downstream suite (Groeneveld et
  al. 2024), which the paper follows for instruction tuning.

What the authors compared (found by reproducing the paper's numbers from these rows;
``config/amurochar_analysis.yaml`` encodes it and ``tests/test_amurochar.py`` checks it):

- Cross-task MRC (section 6.2): base and fine-tuned both at 4 shots in the default format,
  same checkpoint, the one learning rate per task of the release (2e-6; XSum 2e-7), 8
  checkpoints x 4 pairs. classification -> generation: eval on xsum and socialiqa after
  fine-tuning on mnli or paws: -0.6146 (paper: -61.4 %). generation -> classification:
  eval on paws and mnli_matched (not mnli_mismatched) after fine-tuning on xsum or
  socialiqa: +0.0031 (paper: 0.3 %). 13 of the 16 classification fine-tunes score
  exactly 0 ROUGE-L on socialiqa (ratio -1), which drives the first number.
- Table 5 (mean ft - base per checkpoint, every pair weighing the same):
  "learned in fine-tuning" = mnli_matched, mnli_mismatched <- mnli; paws <- paws; xsum,
  xlsum <- xsum; socialiqa <- socialiqa (all from ``all_perf_table.csv`` at 4 shots,
  default format) and boolq <- tulu (``official_eval_table.csv``: Tulu model vs the
  official base row ``checkpoint-{step}`` of the same checkpoint, not a 4-shot base).
  "learned in pre-training" = sciq_mc, hellaswag, arc_challenge, arc_easy, openbookqa
  <- tulu, all from the official table (Tulu vs official base), with the official SciQ
  pair counted twice (the release names both SciQ sets "sciq"; the authors' notebook
  listed it twice). All 16 published numbers are reproduced to the third decimal with
  the duplicate; without it the pre-training row is 0.037, 0.041, 0.002, 0.009, 0.022,
  0.017, 0.014, -0.002 (group ``pretraining_dedup`` of the shipped config).

Other facts about the release that the importer handles or that a reader should know:

- ``checkpoint-1000_4shots`` (one row, socialiqa) is a second, non-canonical copy of the
  base cell ``olmo1b_checkpoint-1000_original_hf_4shots`` / socialiqa (0.018451 vs
  0.018466): the canonical row is kept, the copy dropped and reported in the notes.
- One fine-tune at another learning rate (``olmo1b_hf_main_mnli_3epoch_2e-5``, RTE,
  0-shot) is a tuning leftover; 0-, 2- and 7-shot rows exist for a few cells only.
- The ``qqp`` and ``stsb`` eval sets were unlabelled (gold -1), so their accuracies (1.0 at
  checkpoint 1000, for example) are artifacts; LLMBar Adversarial_Manual is 1.0 with std 0
  at the first base checkpoint. Many classification scores equal a constant-prediction
  rate (MNLI ~0.327, PAWS ~0.558 for base models), which is what "flat during
  pre-training" means for those sets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ckptsweep.analysis.scores import SCORES_COLUMNS, assign_role
from ckptsweep.files import atomic_write

MODEL = "OLMo-1B-hf"
MAIN_STEP = 738020
"""OLMo-1B-hf's final step: its ``main`` is revision ``step738020-tokens3094B``."""
STEP_LABELS = {MAIN_STEP: "main"}
TOKENS_PER_STEP = 2048 * 2048
Z95 = 1.959963984540054
OFFICIAL_SHOTS = 0
DEFAULT_ANALYSIS = Path(__file__).resolve().parents[3] / "config" / "amurochar_analysis.yaml"
"""The shipped analysis config for the imported table (pairs, shots, groups)."""

TRAIN_TASKS = {"mnli": ("nli", "classification"), "paws": ("paraphrase", "classification"),
               "xsum": ("summarization", "generation"),
               "socialiqa": ("question_generation", "generation"), "tulu": ("chat", "chat")}
"""Released fine-tuning task -> (task type, kind)."""


def _sft(task: str, kind: str, of: str, role_in: str) -> dict:
    return {"task": task, "kind": kind, "of": of, "role_in": role_in}


def _bench(task: str, kind: str) -> dict:
    return {"task": task, "kind": kind, "of": None, "role_in": None}


EVAL_SETS = {
    "mnli_matched": _sft("nli", "classification", "mnli", "id"),
    "mnli_mismatched": _sft("nli", "classification", "mnli", "id"),
    "rte": _sft("nli", "classification", "mnli", "ood"),
    "gpt3nli": _sft("nli", "classification", "mnli", "ood"),
    "paws": _sft("paraphrase", "classification", "paws", "id"),
    "qqp": _sft("paraphrase", "classification", "paws", "ood"),
    "stsb": _sft("paraphrase", "classification", "paws", "ood"),
    "xsum": _sft("summarization", "generation", "xsum", "id"),
    "xlsum": _sft("summarization", "generation", "xsum", "id"),
    "cnn": _sft("summarization", "generation", "xsum", "ood"),
    "socialiqa": _sft("question_generation", "generation", "socialiqa", "id"),
    "sciq_qg": _sft("question_generation", "generation", "socialiqa", "ood"),
    "tweetqa": _sft("question_generation", "generation", "socialiqa", "ood"),
    **{f"llmbar_{s}": _bench("llmbar", "classification")
       for s in ("Natural", "Adversarial_Manual", "Adversarial_Neighbor")},
    **{e: _bench("multiple_choice", "multiple_choice")
       for e in ("arc_challenge", "arc_easy", "boolq", "openbookqa", "sciq_mc", "rte_mc",
                 "qqp_mc")},
    "hellaswag": _bench("completion", "multiple_choice"),
}
"""Eval-set description (``scores.assign_role``'s format) from the paper's Table 1."""
PERF_NAMES = {**{e: e for e in EVAL_SETS if not e.endswith(("_qg", "_mc"))}, "sciq": "sciq_qg"}
"""``all_perf_table.csv`` dataset name (format suffix removed) -> eval_set id."""
OFFICIAL_NAMES = {"arc_challenge": "arc_challenge", "arc_easy": "arc_easy", "boolq": "boolq",
                  "hellaswag": "hellaswag", "openbookqa": "openbookqa", "sciq": "sciq_mc",
                  "rte": "rte_mc", "qqp": "qqp_mc"}
FORMAT_SUFFIXES = (("_inputoutput", "io"), ("_instruct", "instruct"))
METRICS = {"classification": "accuracy", "multiple_choice": "accuracy", "generation": "rouge_l"}

_LR = r"(?P<lr>\d+(?:\.\d+)?e-?\d+)"
_SHOTS = r"(?:_(?P<shots>\d+)shots)?"
_TUNED = (r"olmo1b_hf_(?:ckpt(?P<step>\d+)|(?P<main>main))_(?P<task>[a-z]+)_(?P<epochs>\d+)epoch_"
          + _LR)
PERF_PATTERNS = (
    ("base", re.compile(r"olmo1b_checkpoint-(?P<step>\d+)_original(?:_hf_(?P<shots>\d+)shots)?")),
    ("base", re.compile(r"olmo1b_original_hf" + _SHOTS)),
    ("tuned", re.compile(_TUNED + _SHOTS)),
    ("alias", re.compile(r"checkpoint-(?P<step>\d+)_(?P<shots>\d+)shots")),
)
"""``all_perf_table.csv`` model ids; "alias" is a non-canonical base id (see the notes)."""
OFFICIAL_PATTERNS = (
    ("base", re.compile(r"checkpoint-(?P<step>\d+)")),
    ("base", re.compile(r"olmo1b_original_hf")),
    ("tuned", re.compile(_TUNED)),
)


def step_label(step) -> str:
    """"main" for the final checkpoint, the step number otherwise."""
    try:
        return STEP_LABELS.get(int(step), str(step))
    except (TypeError, ValueError):
        return str(step)


def parse_model_id(model_id: str, official: bool = False) -> dict:
    """Provenance fields of one released ``model_id``; ValueError if no pattern matches.

    Returns step, variant, train_task, train_kind, lr, shots and ``canonical`` (False for
    the stray ``checkpoint-{step}_{k}shots`` form of the perf table)."""
    patterns = OFFICIAL_PATTERNS if official else PERF_PATTERNS
    for form, pattern in patterns:
        m = pattern.fullmatch(model_id)
        if m is None:
            continue
        g = m.groupdict()
        step = MAIN_STEP if g.get("step") is None else int(g["step"])
        shots = OFFICIAL_SHOTS if official else int(g.get("shots") or 0)
        if form != "tuned":
            return {"step": step, "variant": "base", "train_task": None, "train_kind": None,
                    "lr": None, "shots": shots, "canonical": form == "base"}
        if g["task"] not in TRAIN_TASKS:
            raise ValueError(f"unknown fine-tuning task {g['task']!r} in model id "
                             f"{model_id!r}; known: {sorted(TRAIN_TASKS)}")
        return {"step": step, "variant": f"{g['task']}-lr{g['lr']}-{g['epochs']}ep",
                "train_task": g["task"], "train_kind": TRAIN_TASKS[g["task"]][1],
                "lr": float(g["lr"]), "shots": shots, "canonical": True}
    forms = ["olmo1b_checkpoint-{step}_original[_hf_{k}shots]", "olmo1b_original_hf[_{k}shots]",
             "olmo1b_hf_{ckpt{step}|main}_{task}_{E}epoch_{lr}[_{k}shots]"]
    if official:
        forms = ["checkpoint-{step}", "olmo1b_original_hf",
                 "olmo1b_hf_{ckpt{step}|main}_{task}_{E}epoch_{lr}"]
    raise ValueError(f"unknown model id {model_id!r}; expected one of {forms}")


def parse_eval_name(name: str, official: bool = False) -> tuple[str, str]:
    """(eval_set id, format) of a released ``eval dataset`` name; ValueError if unknown."""
    if official:
        if name not in OFFICIAL_NAMES:
            raise ValueError(f"unknown eval dataset {name!r}; known: {sorted(OFFICIAL_NAMES)}")
        return OFFICIAL_NAMES[name], "default"
    dataset, fmt = name, "default"
    for suffix, f in FORMAT_SUFFIXES:
        if name.endswith(suffix):
            dataset, fmt = name[:-len(suffix)], f
            break
    if dataset not in PERF_NAMES:
        raise ValueError(f"unknown eval dataset {name!r} (dataset {dataset!r}, format {fmt}); "
                         f"known datasets: {sorted(PERF_NAMES)}")
    return PERF_NAMES[dataset], fmt


def _read_table(path: str | os.PathLike, official: bool) -> pd.DataFrame:
    """One released CSV as scores rows plus ``src_line`` ("file:line", 1-based), ``src_id``
    and ``src_canonical``."""
    path = Path(path)
    df = pd.read_csv(path, index_col=0)
    need = ["model_id", "eval dataset", "Performance"] + ([] if official else ["std"])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {missing}; has {list(df.columns)}")
    rows = []
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2  # the header is line 1; the release has no quoted newlines
        try:
            prov = parse_model_id(str(rec["model_id"]), official)
            eval_set, fmt = parse_eval_name(str(rec["eval dataset"]), official)
        except ValueError as e:
            raise ValueError(f"{path}, line {line}: {e}") from None
        canonical = prov.pop("canonical")
        kind = EVAL_SETS[eval_set]["kind"]
        value = float(rec["Performance"])
        std = float(rec["std"]) if not official else float("nan")
        rows.append({"model": MODEL, **prov, "tokens": prov["step"] * TOKENS_PER_STEP,
                     "seed": None, "eval_set": eval_set, "eval_kind": kind,
                     "role": assign_role(prov["variant"], prov["train_task"], eval_set,
                                         EVAL_SETS),
                     "format": fmt, "metric": METRICS[kind], "value": value,
                     "ci_low": value - Z95 * std, "ci_high": value + Z95 * std, "n": None,
                     "src_line": f"{path.name}:{line}", "src_id": rec["model_id"],
                     "src_canonical": canonical})
    return pd.DataFrame(rows)


def _drop_duplicate_cells(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the canonical row of a cell filled twice; two canonical rows are an error."""
    cell = ["model", "step", "variant", "eval_set", "format", "shots", "metric"]
    dup = df.duplicated(cell, keep=False)
    notes, drop = [], []
    for _, g in df[dup].groupby(cell, sort=True):
        canon = g[g["src_canonical"]]
        if len(canon) != 1:
            raise ValueError(f"the cell {g[cell].iloc[0].to_dict()} is filled by several rows: "
                             + ", ".join(f"{r.src_line} ({r.src_id})" for r in g.itertuples()))
        for r in g[~g["src_canonical"]].itertuples():
            c = canon.iloc[0]
            notes.append(f"{r.src_line}: {r.src_id!r} / {r.eval_set} duplicates "
                         f"{c['src_line']} ({c['src_id']!r}; {c['value']:.6f} vs "
                         f"{r.value:.6f}): dropped")
            drop.append(r.Index)
    return df.drop(index=drop), notes


def import_release(perf: str | os.PathLike,
                   official: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """(scores table, notes) from the two released CSVs; notes describe dropped rows."""
    df = pd.concat([_read_table(perf, False), _read_table(official, True)], ignore_index=True)
    df, notes = _drop_duplicate_cells(df)
    df = df[SCORES_COLUMNS].astype({"step": "int64", "tokens": "int64", "shots": "int64",
                                    "lr": "float64", "value": "float64", "ci_low": "float64",
                                    "ci_high": "float64", "seed": "Int64", "n": "Int64"})
    for col in ("model", "variant", "train_task", "train_kind", "eval_set", "eval_kind", "role",
                "format", "metric"):
        df[col] = df[col].astype("string")
    order = ["model", "step", "variant", "eval_set", "format", "shots", "metric"]
    return df.sort_values(order, kind="stable", ignore_index=True), notes


def check_out_path(out: str | os.PathLike) -> Path:
    """Refuse to write over the workflow's own scores table (``results/scores.parquet``)."""
    out = Path(out)
    resolved = out.resolve()
    if resolved == (Path.cwd() / "results" / "scores.parquet").resolve() or \
            resolved.parts[-2:] == ("results", "scores.parquet"):
        raise ValueError(f"refusing to write imported results to {out}: that is the "
                         f"workflow's own scores table; use results/imported/amurochar.parquet")
    return out


def write_import(perf: str | os.PathLike, official: str | os.PathLike,
                 out: str | os.PathLike) -> tuple[Path, pd.DataFrame, list[str]]:
    """Import both CSVs and write the table atomically to ``out`` (parquet)."""
    out = check_out_path(out)
    scores, notes = import_release(perf, official)
    path = atomic_write(out, lambda p: scores.to_parquet(p, index=False))
    return path, scores, notes

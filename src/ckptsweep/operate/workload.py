"""The work of each heavy job, from the study alone: examples, tokens and model FLOPs.

Dataset sizes come from the prepared records when they exist
(``resources/data/{dataset}/{split}.jsonl``), else from the config (``n_train``,
``n_test``, ``train_fraction``) bounded by the world's split sizes (``world``) or the
table's published split sizes (hub datasets). Token lengths per record come from the
prepared records (characters / the table's characters per token) or from the table's
``lengths`` (the world's measured on the embedded default, the hub's estimated from the
datasets' published statistics). What is counted follows the jobs: a fine-tune trains on
every example ``epochs`` times, cut to ``max_length``; an evaluation job scores each
variant's plan (`ckptsweep.study.grid.eval_plan`) in every format and shot count, its
prompts carrying ``shots`` demonstrations, generation decoding ``max_new_tokens``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ckptsweep.data.tasks import task_type
from ckptsweep.operate.throughput import Shape, embedded_shape, hub_shape, table
from ckptsweep.study import grid
from ckptsweep.study.config import Study
from ckptsweep.train.config import FinetuneConfig

TEMPLATE_TOKENS = 12
"""Prompt-format words around a record's fields (### Input_1: ..., an instruction)."""
SAMPLE = 2000
"""Records read from a prepared file to measure its lengths."""


@dataclass(frozen=True)
class Data:
    """One dataset as the cost model sees it."""

    name: str
    kind: str
    n_train: int
    n_test: int
    input: float
    """Tokens of a record's input fields (a chat: the whole conversation)."""
    target: float
    """Tokens of its answer (label word, summary, question; a chat: 0)."""
    choices: int = 0
    choice: float = 0.0
    """Answers of a multiple-choice record, and tokens per answer."""
    labels: int = 0
    source: str = ""


@dataclass
class Work:
    """One job's work: FLOPs by kind of rate, models loaded, what it writes."""

    flops: dict[str, float] = field(default_factory=dict)
    models: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    """Prediction rows by kind (score, generation): the predictions' size on disk."""
    steps: int = 0
    """A fine-tune's optimizer steps."""
    tokens: float = 0.0

    def add(self, kind: str, tokens: float, n: int) -> None:
        self.flops[kind] = self.flops.get(kind, 0.0) + tokens * n


# ---------------------------------------------------------------------------- datasets

@cache
def _prepared(path: str) -> tuple[int, list[dict]]:
    """(records, a sample of them) of a prepared jsonl."""
    n, sample = 0, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += 1
            if len(sample) < SAMPLE:
                sample.append(json.loads(line))
    return n, sample


def _chars(record: dict, fields) -> int:
    return sum(len(str(record.get(k, ""))) for k in fields)


def _lengths_from(sample: list[dict], task, cpt: float) -> dict:
    if not sample:
        return {}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    if task.kind == "chat":
        return {"input": mean([sum(len(m["content"]) for m in r["messages"])
                               for r in sample]) / cpt, "target": 0.0}
    inputs = [k for k in task.fields if k not in ("choices", task.target)]
    out = {"input": mean([_chars(r, inputs) for r in sample]) / cpt}
    if task.kind in ("multiple_choice", "completion"):
        out["choices"] = round(mean([len(r["choices"]) for r in sample]))
        out["choice"] = mean([mean([len(c) for c in r["choices"]]) for r in sample]) / cpt
        out["target"] = out["choice"]
    elif task.target == "label":
        out["target"] = mean([len(w) for w in task.labels]) / cpt
    else:
        out["target"] = mean([len(str(r.get(task.target, ""))) for r in sample]) / cpt
    return out


@cache
def _world_sizes(world: str) -> dict[str, dict[str, int]]:
    """Split sizes of the world the ``world`` block (as JSON) generates."""
    from ckptsweep.data.world.config import WorldConfig
    from ckptsweep.data.world.tasks import dataset_specs

    cfg = WorldConfig(**{k: v for k, v in json.loads(world).items()
                         if k in WorldConfig.__dataclass_fields__})
    return {s.name: dict(s.sizes) for s in dataset_specs(cfg)}


def _hub_size(d, split: str) -> int | None:
    hub = d.hub or {}
    key = hub.get("path", "") + (f"/{hub['name']}" if hub.get("name") else "")
    sizes = table()["splits"].get(key, {})
    return sizes.get((hub.get("splits") or {}).get(split, split))


def dataset(study: Study, name: str, root: Path) -> Data:
    """Sizes and lengths of dataset ``name`` (see the module docstring)."""
    d = study.datasets[name]
    task = task_type(d.task)
    lengths = table()["lengths"]
    cpt = lengths["chars_per_token"][d.source]
    n, sources, measured = {}, [], {}
    for split in ("train", "test"):
        path = root / "resources" / "data" / name / f"{split}.jsonl"
        if path.exists():
            n[split], sample = _prepared(str(path))
            measured = measured or _lengths_from(sample, task, cpt)
            sources.append(f"{split}: {path.relative_to(root)}")
            continue
        want = d.n_train if split == "train" else d.n_test
        world = json.dumps(study.raw.get("world") or {}, sort_keys=True)
        have = (_world_sizes(world).get(name, {}).get(split) if d.source == "world"
                else _hub_size(d, split))
        if split == "train" and d.train_fraction is not None and have:
            want = round(have * d.train_fraction)
        n[split] = min(x for x in (want, have) if x is not None) if (want or have) else 0
        sources.append(f"{split}: {'world sizes' if d.source == 'world' else 'hub sizes'}")
    key = name if d.source == "world" else d.schema
    known = lengths[d.source].get(key) or lengths[d.source].get(d.schema) or {}
    lens = {**known, **measured}
    if not measured:
        sources.append(f"lengths: table {d.source}.{key}" if known else "lengths: unknown")
    return Data(name, task.kind, n.get("train", 0), n.get("test", 0),
                lens.get("input", 50.0), lens.get("target", 5.0), lens.get("choices", 0),
                lens.get("choice", 0.0), len(task.labels), "; ".join(sources))


# ------------------------------------------------------------------------------ shapes

def shape(study: Study, model: str) -> Shape | None:
    m = study.models[model]
    if m.source == "pretrain":
        vocab = int(m.tokenizer.get("vocab_size", 2048))
        return embedded_shape(m.pretrain or {}, vocab)
    return hub_shape(m.repo or next(iter(m.repos.values()), None))


# -------------------------------------------------------------------------------- jobs

def pretrain(study: Study, model: str, start: int, step: int) -> Work:
    """One checkpoint's pre-training job: from the state a lower step's job saved
    (``start``) to ``step`` of the model's schedule."""
    from ckptsweep.train.pretrain import PretrainConfig

    p = study.models[model].pretrain or {}
    cfg = PretrainConfig(**{k: v for k, v in p.items()
                            if k in PretrainConfig.__dataclass_fields__})
    s = shape(study, model)
    tokens = (step - start) * cfg.batch_size * cfg.seq_len
    w = Work(models=1, steps=step - start, tokens=tokens)
    w.add("pretrain", tokens, 6 * s.flop_params)
    return w


def finetune(study: Study, model: str, ft: grid.Finetune, root: Path) -> Work:
    s = shape(study, model)
    data = dataset(study, ft.dataset, root)
    get = lambda k: ft.settings.get(k, getattr(FinetuneConfig, k))  # noqa: E731
    epochs, batch = float(get("epochs")), int(get("batch_size")) * int(get("grad_accum"))
    extra = 0 if data.kind == "chat" else TEMPLATE_TOKENS
    per = min(data.input + data.target + extra, int(get("max_length")))
    tokens = data.n_train * epochs * per
    w = Work(models=1, steps=math.ceil(data.n_train * epochs / max(batch, 1)), tokens=tokens)
    w.add("finetune", tokens, 6 * (s.flop_params if s else 0))
    return w


def _max_length(study: Study, s: Shape | None) -> int:
    return study.evaluation.max_length or (s.max_position if s else 2048)


def score_sets(study: Study, work: Work, s: Shape | None, plan: dict, root: Path,
               methods=None) -> None:
    """Add the scoring of one variant's ``plan`` (eval set -> formats) to ``work``."""
    ev = study.evaluation
    n2 = 2 * (s.flop_params if s else 0)
    limit = _max_length(study, s)
    spellings = 2 if ev.space_variants else 1
    for name, formats in plan.items():
        d = dataset(study, name, root)
        for shots in ev.shots:
            prompt = min((shots + 1) * (d.input + TEMPLATE_TOKENS) + shots * d.target, limit)
            for method in methods or [ev.method]:
                n = d.n_test * len(formats)
                if d.kind == "generation":
                    work.add("score", n * prompt, n2)
                    work.add("decode", n * ev.max_new_tokens, n2)
                    work.rows["generation"] = work.rows.get("generation", 0) + n
                    continue
                if d.choices:  # every answer on top of the shared prompt
                    cands = d.choices * d.choice * spellings
                elif method in ("free", "constrained"):  # greedy label tokens
                    work.add("decode", n * ev.label_max_new_tokens, n2)
                    cands = 0.0
                elif method == "tokenprob":  # the prompt's next-token distribution
                    cands = 0.0
                else:  # loglik: every label (and spelling) scored
                    cands = d.labels * max(d.target, 1.0) * spellings
                work.add("score", n * (prompt + cands), n2)
                work.rows["score"] = work.rows.get("score", 0) + n


def evaluate(study: Study, model: str, root: Path) -> Work:
    """One evaluation job (a checkpoint): every variant's plan."""
    s = shape(study, model)
    w = Work()
    for variant in grid.variants(study, model):
        w.models += 1
        score_sets(study, w, s, grid.eval_plan(study, variant, model), root)
    return w


def ablation(study: Study, model: str, root: Path) -> Work:
    s = shape(study, model)
    plan = grid.ablation(study, model)
    w = Work()
    for v in plan["variants"]:
        w.models += 1
        score_sets(study, w, s, {n: ["default"] for n in v["sets"]}, root, plan["methods"])
    return w


def proxy(study: Study, model: str, root: Path) -> Work:
    """One proxy job of the checkpoint advisor (a checkpoint; `ckptsweep.evaluate.proxy`):
    per proxied task, ``steps_fraction`` of its full fine-tune's training tokens (the same
    batch for a fraction of the steps), then its dev slice scored like the task's test
    set (``dev_size`` records in the proxy's formats)."""
    from ckptsweep.study import advisor

    p, s = study.advisor.proxy, shape(study, model)
    w = Work()
    for ft in advisor.proxy_finetunes(study, model):
        full = finetune(study, model, ft, root)
        w.models += 1
        w.steps += max(1, round(p.steps_fraction * full.steps))
        w.tokens += full.tokens * p.steps_fraction
        w.add("finetune", full.tokens * p.steps_fraction, 6 * (s.flop_params if s else 0))
        dev = Work()
        score_sets(study, dev, s, {ft.dataset: list(p.formats)}, root)
        n_test = dataset(study, ft.dataset, root).n_test
        for kind, flops in dev.flops.items():  # the test set's scoring, per dev record
            w.flops[kind] = w.flops.get(kind, 0.0) + flops * p.dev_size / max(n_test, 1)
    return w


def bpb(study: Study, model: str, root: Path) -> Work:
    """One bits-per-byte job of the checkpoint advisor (a checkpoint; `ckptsweep.evaluate.
    bpb`): the base model scores each generation set's references after their prompts."""
    from ckptsweep.study import advisor

    s = shape(study, model)
    n2 = 2 * (s.flop_params if s else 0)
    limit = _max_length(study, s)
    w = Work(models=1)
    for name, formats in advisor.bpb_sets(study, model).items():
        d = dataset(study, name, root)
        for shots in study.evaluation.shots:
            prompt = min((shots + 1) * (d.input + TEMPLATE_TOKENS) + shots * d.target, limit)
            w.add("score", d.n_test * len(formats) * (prompt + d.target), n2)
    return w


def attribute(study: Study, model: str, slice_: str) -> Work:
    """Fact tracing: the fact fine-tune (``finetune`` slice), then per-example gradients
    of every candidate and query at each saved state, counted as training tokens."""
    a = study.raw.get("attribution", {})
    s = shape(study, model)
    doc = float(table()["lengths"]["world"].get("abstract", {}).get("input", 30.0))
    q = int(a.get("max_queries", 100))
    if slice_ == "finetune":
        f = a.get("finetune", {})
        docs = (int(f.get("people", 20)) * int(f.get("docs_per_person", 8))
                + int(f.get("distractors", 0)) + int(f.get("mixed", 0)))
        trained, states = docs * float(f.get("epochs", 10)), int(f.get("states", 3))
    else:
        docs = min(int((study.world or {}).get("corpus_docs", 19700)), q * 300)
        trained, states = 0.0, len(study.models[model].steps)
    tokens = (trained + (docs + q) * states) * doc
    w = Work(models=states, tokens=tokens)
    w.add("attribute", tokens, 6 * s.flop_params)
    return w

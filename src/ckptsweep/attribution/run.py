"""One fact-tracing job: pick the learned facts, score every method, write per-query metrics.

``run(spec, ...)`` handles one (model, slice):

- ``finetune``: fine-tunes the model's final checkpoint on the closed-book fact abstracts
  (``attribution_data.make_finetune_set``), keeping ``states`` evenly spaced copies of the
  weights for TracIn; the base model is the "first" state, the fine-tuned one the "last".
- ``pretrain``: the pre-training corpus and the saved pre-training checkpoints; TracIn
  weights come from the pre-training schedule (``pretrain.lr_at``).

A query qualifies when the model answers it correctly (greedy, closed-book) at the last
state and not at the first. Each state's TracIn weight is the sum of the learning rates of
the optimizer steps it stands for (the steps since the previous saved state), so unevenly
spaced checkpoints (50, 300, 600, 1000) are weighted by the training they summarise.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from ckptsweep.attribution import protocol as proto
from ckptsweep.attribution.bm25 import BM25Plus
from ckptsweep.attribution.config import AttributionSettings, Tracin
from ckptsweep.attribution.data import (
    FactFinetuneConfig,
    corpus_set,
    make_finetune_set,
    query_for,
)
from ckptsweep.device import resolve_device
from ckptsweep.errors import ConfigError

DEFAULTS = AttributionSettings()
"""What a spec that leaves a key out gets (the workflow's specs hold every key)."""


def load_eager(path: str, device: str = "cpu"):
    """A model in eval mode with eager attention (torch.func's vmap has no batching rule
    for the fused CPU attention kernel), on ``device``, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    return model.to(device).eval(), tok


def fact_finetune(model, tok, records: list[dict], cfg: FactFinetuneConfig, log=print):
    """Train on the abstracts (loss on every token); return ([state dicts], [weights])."""
    import torch

    from ckptsweep.attribution.tracin import doc_example, pad

    torch.manual_seed(cfg.seed)
    examples = [doc_example(tok, r["text"]) for r in records]
    per_epoch = -(-len(examples) // cfg.batch_size)
    total = per_epoch * cfg.epochs
    marks = sorted({round(total * (i + 1) / cfg.states) for i in range(cfg.states)})
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    states, weights, step, last = [], [], 0, 0
    model.train()
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(examples), generator=gen).tolist()
        for s in range(0, len(order), cfg.batch_size):
            ids, labels = pad([examples[i] for i in order[s:s + cfg.batch_size]],
                              tok.pad_token_id, next(model.parameters()).device)
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step in marks:
                states.append(copy.deepcopy(model.state_dict()))
                weights.append(cfg.lr * (step - last))
                last = step
                log(f"fact fine-tune: state at step {step}/{total}, loss {loss.item():.3f}")
    model.eval()
    log(f"fact fine-tune: {total} steps in {time.perf_counter() - t0:.1f}s")
    return states, weights


def pretrain_weights(steps: list[int], pretrain_cfg: dict) -> list[float]:
    from ckptsweep.train.pretrain import PretrainConfig, lr_at

    cfg = PretrainConfig(**pretrain_cfg)
    out, prev = [], 0
    for s in steps:
        out.append(sum(lr_at(t, cfg) for t in range(prev, s)))
        prev = s
    return out


class States:
    """Models of the saved states, materialised one at a time."""

    def __init__(self, base, state_dicts=None, paths=None, device="cpu"):
        self.base, self.state_dicts, self.paths = base, state_dicts, paths
        self.device = device

    def __len__(self):
        return len(self.state_dicts if self.state_dicts is not None else self.paths)

    def __iter__(self):
        if self.state_dicts is not None:
            model = copy.deepcopy(self.base)
            for sd in self.state_dicts:
                model.load_state_dict(sd)
                yield model.eval()
        else:
            for p in self.paths:
                yield load_eager(p, self.device)[0]


def run(spec: dict, manifest: str | list[str], world_info: str, corpus: str | None, out_dir: Path,
        log=print) -> dict:
    from ckptsweep.checkpoints.manifest import read_manifests

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    world = json.loads(Path(world_info).read_text())
    table = read_manifests([manifest] if isinstance(manifest, str | Path) else manifest)
    steps = [str(s) for s in spec["steps"]]
    kind = spec["slice"]
    device = resolve_device(spec.get("device", DEFAULTS.device))

    t = time.perf_counter()
    if kind == "finetune":
        cfg = FactFinetuneConfig(**spec.get("finetune", {}))
        final = table[steps[-1]].source
        base, tok = load_eager(final, device)
        train, proponents = make_finetune_set(world, cfg)
        first_model = base
        tuned = copy.deepcopy(base)
        sds, weights = fact_finetune(tuned, tok, train, cfg, log)
        states = States(base, state_dicts=sds)
        last_model = tuned
        state_names = [f"ft{i + 1}" for i in range(len(sds))]
    elif kind == "pretrain":
        train, proponents = corpus_set(Path(corpus), world)
        paths = [table[s].source for s in steps]
        first_model, tok = load_eager(paths[0], device)
        last_model = load_eager(paths[-1], device)[0]
        states = States(None, paths=paths, device=device)
        weights = pretrain_weights([int(s) for s in steps], spec.get("pretrain", {}))
        state_names = steps
    else:
        raise ConfigError("attribution.slices", f"{kind!r} is not one of finetune, pretrain")
    timings["setup"] = time.perf_counter() - t
    queries = [query_for(f) for f in sorted(proponents)]
    rows, info = trace(train, proponents, queries, tok, first_model, last_model, states,
                       weights, spec, log, timings)
    info.update({"model": spec["model"], "slice": kind, "states": state_names})
    for row in rows:
        row.update({"model": spec["model"], "slice": kind})
    return _write(out_dir, rows, info, t_start)


def trace(train: list[dict], proponents: dict[str, list[str]], queries: list[dict], tok,
          first_model, last_model, states, weights: list[float], spec: dict, log=print,
          timings: dict | None = None) -> tuple[list[dict], dict]:
    """The protocol on any training set (``attribution_data`` records) and queries: pick
    the learned ones, build candidate sets, score every method, return (per-query metric
    rows, info)."""
    from ckptsweep.attribution import tracin

    timings = {} if timings is None else timings
    seed = int(spec.get("seed", DEFAULTS.seed))
    pad_id = tok.pad_token_id
    kind = spec.get("slice", "")

    # Queries: the facts with proponents that the model learned (last state, not first).
    t = time.perf_counter()
    queries = [q for q in queries if proponents.get(q["fact"])]
    facts = [q["fact"] for q in queries]
    qex = [tracin.query_example(tok, q["prompt"], q["answer"]) for q in queries]
    first_ok = tracin.greedy_correct(first_model, qex, pad_id)
    last_ok = tracin.greedy_correct(last_model, qex, pad_id)
    learned = [i for i in range(len(facts)) if last_ok[i] and not first_ok[i]]
    if not spec.get("require_learned", True):  # trace every query (tests, external sets)
        learned = list(range(len(facts)))
    rng = np.random.default_rng(seed)
    cap = spec.get("max_queries")
    chosen = sorted(rng.choice(learned, cap, replace=False).tolist()) \
        if cap and len(learned) > cap else learned
    timings["queries"] = time.perf_counter() - t
    log(f"{kind}: {len(facts)} facts, correct first {sum(first_ok)}, last {sum(last_ok)}, "
        f"learned {len(learned)}; tracing {len(chosen)}")
    info = {"state_weights": weights, "n_facts": len(facts), "n_correct_first": sum(first_ok),
            "n_correct_last": sum(last_ok), "n_learned": len(learned), "n_queries": len(chosen),
            "n_train": len(train)}
    rows: list[dict] = []
    if not chosen:
        info["timings"] = timings
        return rows, info

    # BM25 over the whole training set, then the candidate sets.
    t = time.perf_counter()
    index = {r["id"]: i for i, r in enumerate(train)}
    bm = BM25Plus([r["text"] for r in train])
    by_answer: dict[str, list[int]] = {}
    for i, r in enumerate(train):
        for a in set(r["answers"]):
            by_answer.setdefault(a, []).append(i)
    cand_rng = np.random.default_rng(seed + 1)
    n = DEFAULTS.candidates
    qs, bm_scores, cands = [], [], []
    for qi in chosen:
        q = queries[qi]
        s = bm.scores(q["text"])
        top = np.argsort(-s, kind="stable")[:spec.get("n_bm25", n.bm25)].tolist()
        props = [index[d] for d in proponents[q["fact"]]]
        cands.append(proto.candidate_set(props, top, by_answer.get(q["answer"], []), len(train),
                                         cand_rng, spec.get("n_same", n.same_answer),
                                         spec.get("n_random", n.random)))
        qs.append(q)
        bm_scores.append(s)
    union = sorted({i for c in cands for i in c})
    col = {d: j for j, d in enumerate(union)}
    timings["bm25"] = time.perf_counter() - t
    log(f"candidates: {np.mean([len(c) for c in cands]):.0f} per query, {len(union)} distinct")

    scores: dict[str, np.ndarray] = {}
    dex = [tracin.doc_example(tok, train[i]["text"]) for i in union]
    qsel = [qex[i] for i in chosen]
    methods = spec.get("methods", list(DEFAULTS.methods))
    if "tracin" in methods or "tracin_cos" in methods:
        t = time.perf_counter()
        tc = Tracin(**spec.get("tracin", {}))
        dot, cos = tracin.tracin(states, weights, qsel, dex, pad_id,
                                 projection_dim=tc.projection_dim, seed=seed, chunk=tc.chunk)
        scores["tracin"], scores["tracin_cos"] = dot.numpy(), cos.numpy()
        timings["tracin"] = time.perf_counter() - t
    if "embed_dot" in methods or "embed_cos" in methods:
        t = time.perf_counter()
        dot, cos = tracin.embedding_scores(last_model, qsel, dex, pad_id)
        scores["embed_dot"], scores["embed_cos"] = dot.numpy(), cos.numpy()
        timings["embed"] = time.perf_counter() - t
    rand = np.random.default_rng(seed + 2).random((len(qs), len(union)))

    for k, q in enumerate(qs):
        correct = {index[d] for d in proponents[q["fact"]]}
        c = cands[k]
        cols = [col[i] for i in c]
        per_method = {"bm25": bm_scores[k][c], "random": rand[k, cols]}
        per_method.update({m: scores[m][k, cols] for m in scores})
        for m in methods:
            ranked = proto.rank(c, per_method[m])
            rows.append({"query": q["id"],
                         "fact": q["fact"], "method": m, "n_candidates": len(c),
                         "n_proponents": len(correct), **proto.query_metrics(ranked, correct)})
    info["n_candidates_mean"] = float(np.mean([len(c) for c in cands]))
    info["n_scored"] = len(union)
    info["timings"] = timings
    return rows, info


def _write(out_dir: Path, rows: list[dict], info: dict, t_start: float) -> dict:
    import pandas as pd

    from ckptsweep.files import staged_dir

    cols = ["model", "slice", "query", "fact", "method", "n_candidates", "n_proponents", "rr"]
    cols += [f"p@{k}" for k in proto.KS] + [f"r@{k}" for k in proto.KS]
    with staged_dir(out_dir) as tmp:
        pd.DataFrame(rows, columns=cols).to_csv(tmp / "queries.csv", index=False)
        info["seconds"] = time.perf_counter() - t_start
        (tmp / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info

"""Fact tracing (FTRACE): metrics, BM25, TracIn, embeddings, candidate sets, the adapter."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ckptsweep.attribution import protocol as proto
from ckptsweep.attribution.data import FactFinetuneConfig, make_finetune_set, query_for
from ckptsweep.data.world.vocab import ATTRS, FORMS, VALUES

DATA = Path(__file__).parent / "data" / "ftrace"


# ---------------------------------------------------------------------------- metrics


def test_metrics_on_hand_made_rankings():
    ranked = ["a", "b", "c", "d", "e", "f"]
    m = proto.query_metrics(ranked, {"b", "e"}, ks=(1, 3, 5))
    assert m["rr"] == 0.5
    assert m["p@1"] == 0 and m["p@3"] == pytest.approx(1 / 3) and m["p@5"] == pytest.approx(2 / 5)
    assert m["r@1"] == 0 and m["r@3"] == 0.5 and m["r@5"] == 1.0
    assert proto.query_metrics(ranked, {"a"}, ks=(1,)) == {"rr": 1.0, "p@1": 1.0, "r@1": 1.0}
    assert proto.reciprocal_rank(ranked, {"z"}) == 0.0
    # k beyond the ranking: precision still divides by k, as in the reference
    assert proto.query_metrics(["a", "b"], {"a", "b"}, ks=(25,))["p@25"] == pytest.approx(2 / 25)


def test_rank_breaks_ties_by_candidate_order():
    assert proto.rank([7, 3, 5], np.array([1.0, 2.0, 1.0])) == [3, 7, 5]


def test_summary_has_intervals_and_is_seeded():
    rows = [{"model": "m", "slice": "s", "method": "x", "query": f"q{i}", "rr": i % 3 / 2,
             **{f"p@{k}": 0.1 for k in proto.KS}, **{f"r@{k}": 0.5 for k in proto.KS}}
            for i in range(20)]
    a = proto.summarize(rows, seed=3, n_boot=200)
    assert a == proto.summarize(rows, seed=3, n_boot=200)
    mrr = next(r for r in a if r["metric"] == "mrr")
    assert mrr["ci_low"] <= mrr["value"] <= mrr["ci_high"] and mrr["n"] == 20


# ---------------------------------------------------------------------------- BM25


def _texts(n, seed=0):
    rng = random.Random(seed)
    names = ["Kalo", "Mira", "Tovan", "Renbel", "Sadu", "Linzo"]
    out = []
    for _ in range(n):
        name = rng.choice(names)
        attrs = rng.sample(ATTRS[1:], rng.randint(1, 3))
        out.append(" ".join(FORMS[a][rng.randrange(4)].format(x=name, v=rng.choice(VALUES[a]))
                            for a in attrs))
    return out


def test_bm25s_agrees_with_rank_bm25():
    rank_bm25 = pytest.importorskip("rank_bm25")
    from ckptsweep.attribution.bm25 import BM25Plus, tokenize

    texts = _texts(300)
    ours = BM25Plus(texts)
    ref = rank_bm25.BM25Plus([tokenize(t) for t in texts], k1=1.5, b=0.75, delta=1)
    for q in _texts(25, seed=1) + ["unseen words only", "Kalo lives in"]:
        np.testing.assert_allclose(ours.scores(q), ref.get_scores(tokenize(q)), rtol=1e-9,
                                   atol=1e-9)


# ---------------------------------------------------------------------------- candidates


def _world():
    names = [f"N{i}" for i in range(60)]
    return {"config": {"seed": 0}, "pools": {"names": names, "cities": ["Rome", "Oslo", "Lima"],
                                             "values": {a: list(v) for a, v in VALUES.items()}}}


def test_finetune_set_states_each_fact_in_its_proponents():
    cfg = FactFinetuneConfig(people=5, distractors=20, mixed=30)
    records, props = make_finetune_set(_world(), cfg)
    by_id = {r["id"]: r for r in records}
    assert len(props) == 25 and len(records) == 5 * 8 + 20 + 30
    decoys = 0
    for fid, ids in props.items():
        q = query_for(fid)
        name = fid.split("|")[0]
        for i in ids:
            assert fid in by_id[i]["facts"] and q["answer"] in by_id[i]["text"]
        # lexical decoys: name and answer together in an example that is not a proponent
        decoys += sum(1 for r in records if r["id"] not in ids and
                      name in r["text"].split() and f"{q['answer']}." in r["text"].split())
    assert decoys > 0
    assert make_finetune_set(_world(), cfg) == (records, props)


def test_candidate_sets_always_contain_the_true_proponents():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(5, 400))
        props = rng.choice(n, int(rng.integers(1, min(n, 8))), replace=False).tolist()
        top = rng.choice(n, min(n, 100), replace=False).tolist()
        same = rng.choice(n, min(n, int(rng.integers(0, 300))), replace=False).tolist()
        cands = proto.candidate_set(props, top, same, n, np.random.default_rng(trial))
        assert set(props) <= set(cands)
        assert len(cands) == len(set(cands))
        assert set(top) <= set(cands)


# ---------------------------------------------------------------------------- TracIn


def _examples(tok, texts):
    from ckptsweep.attribution.tracin import doc_example

    return [doc_example(tok, t) for t in texts]


def test_tracin_self_influence_is_the_squared_gradient_norm(tiny_model, tiny_tokenizer):
    import torch

    from ckptsweep.attribution.tracin import IGNORE, pad, tracin

    ex = _examples(tiny_tokenizer, ["Ana lives in Rome. Ana is a baker.", "Bo is a pilot."])
    dot, cos = tracin([tiny_model], [0.5], ex, ex, tiny_tokenizer.pad_token_id)
    for i, e in enumerate(ex):
        tiny_model.zero_grad()
        ids, labels = pad([e], tiny_tokenizer.pad_token_id)
        logits = tiny_model(input_ids=ids).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE)
        loss.backward()
        sq = sum((p.grad ** 2).sum() for p in tiny_model.parameters() if p.grad is not None)
        assert dot[i, i].item() == pytest.approx(0.5 * sq.item(), rel=1e-4)
        assert cos[i, i].item() == pytest.approx(0.5, rel=1e-5)


def test_projected_tracin_ranks_like_the_exact_one(tiny_model, tiny_tokenizer):
    from scipy.stats import spearmanr

    from ckptsweep.attribution.tracin import query_example, tracin

    # The fixture tokenizer's own words: gradients with structure, not near-orthogonal noise
    # (no random projection can rank scores that differ by less than its error).
    rng = random.Random(2)

    def text():
        n = rng.choice(["Ana", "Bo", "Cy", "Di", "Ed"])
        facts = [f"{n} lives in {rng.choice(['Rome', 'Oslo', 'Lima'])}.",
                 f"{n} is a {rng.choice(['baker', 'pilot', 'nurse'])}."]
        return " ".join(rng.sample(facts, rng.randint(1, 2)))

    train = _examples(tiny_tokenizer, [text() for _ in range(40)])
    queries = [query_example(tiny_tokenizer, p, a) for p, a in
               (("Ana lives in", "Rome"), ("Bo is a", "baker"), ("Cy lives in", "Lima"))]
    pad_id = tiny_tokenizer.pad_token_id
    exact, _ = tracin([tiny_model], [1.0], queries, train, pad_id)
    sketch, _ = tracin([tiny_model], [1.0], queries, train, pad_id, projection_dim=4096, seed=0)
    for i in range(len(queries)):
        assert spearmanr(exact[i].numpy(), sketch[i].numpy()).statistic >= 0.9


# ---------------------------------------------------------------------------- the protocol


def _planted_setup(tok):
    """A training set about a few people, and one query whose only proponent is a
    training example that states exactly the query's fact."""
    texts = _texts(60, seed=3)
    train = [{"id": f"d{i}", "text": t, "facts": [], "answers": []} for i, t in enumerate(texts)]
    q = query_for("Mira|job|pilot")
    train.insert(17, {"id": "planted", "text": q["text"], "facts": [q["fact"]],
                      "answers": [q["answer"]]})
    return train, {q["fact"]: ["planted"]}, [q]


def _trace(model, tok, spec_extra=None):
    from ckptsweep.attribution.run import trace

    train, props, queries = _planted_setup(tok)
    spec = {"seed": 0, "require_learned": False, "n_bm25": 10, "n_same": 10, "n_random": 20,
            "tracin": {"projection_dim": 0}, **(spec_extra or {})}
    return trace(train, props, queries, tok, model, model, [model, model], [0.5, 1.0], spec,
                 log=lambda *_: None)


def test_a_planted_proponent_is_ranked_first_by_every_method(tiny_model, tiny_tokenizer):
    rows, info = _trace(tiny_model, tiny_tokenizer)
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == set(proto.METHODS)
    for m in proto.METHODS:
        if m != "random":
            assert by_method[m]["rr"] == 1.0, m
    assert info["n_queries"] == 1


def test_same_seeds_same_numbers(tiny_model, tiny_tokenizer):
    spec = {"tracin": {"projection_dim": 256}}
    a, _ = _trace(tiny_model, tiny_tokenizer, spec)
    b, _ = _trace(tiny_model, tiny_tokenizer, spec)
    assert a == b
    c, _ = _trace(tiny_model, tiny_tokenizer, {**spec, "seed": 1})
    assert [r["n_candidates"] for r in c] != [r["n_candidates"] for r in a] or \
        [r["rr"] for r in c] != [r["rr"] for r in a]


def test_pretrain_weights_follow_the_cosine_schedule():
    from ckptsweep.attribution.run import pretrain_weights
    from ckptsweep.train.pretrain import PretrainConfig, lr_at

    cfg = {"steps": 100, "lr": 1e-2, "warmup": 0.1}
    w = pretrain_weights([10, 40, 100], cfg)
    full = PretrainConfig(**cfg)
    assert w[0] == pytest.approx(sum(lr_at(t, full) for t in range(10)))
    assert sum(w) == pytest.approx(sum(lr_at(t, full) for t in range(100)))


# ---------------------------------------------------------------------------- FTRACE-TREx


def _rows(name):
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


def test_ftrace_adapter_collapses_sentences_and_matches_facts():
    from ckptsweep.attribution import ftrace

    train, props = ftrace.training_set(_rows("abstracts"))
    ids = [r["id"] for r in train]
    assert ids == ["Q57089-0", "Q57089-3", "Q1794-0", "Q33199-1", "Q6835-0"]
    first = train[0]
    assert first["text"] == "Paul Ehrlich worked in Frankfurt at the institute."
    assert first["answers"] == ["Frankfurt", "Paul Ehrlich"]
    assert props["P937,Q1794,Q57089"] == ["Q57089-0", "Q57089-3"]
    assert props["P361,Q48,Q771405"] == ["Q33199-1"]

    queries = ftrace.queries(_rows("queries"), props)
    assert [q["id"] for q in queries] == ["5b063008-a8ba-4064-9f59-e70102bb8c50", "q-2"]
    q = queries[0]
    assert q["prompt"] == "Paul Ehrlich used to work in" and q["answer"] == "Frankfurt"
    assert q["text"] == "Paul Ehrlich used to work in Frankfurt ."
    assert q["fact"] == "P937,Q1794,Q57089"


def test_ftrace_records_run_through_the_protocol(tiny_model, tiny_tokenizer):
    from ckptsweep.attribution import ftrace
    from ckptsweep.attribution.run import trace

    train, props = ftrace.training_set(_rows("abstracts"))
    queries = ftrace.queries(_rows("queries"), props)
    spec = {"seed": 0, "require_learned": False, "methods": ["bm25", "random"]}
    rows, info = trace(train, props, queries, tiny_tokenizer, tiny_model, tiny_model,
                       [tiny_model], [1.0], spec, log=lambda *_: None)
    bm25 = {r["query"]: r for r in rows if r["method"] == "bm25"}
    assert bm25["5b063008-a8ba-4064-9f59-e70102bb8c50"]["rr"] == 1.0
    assert bm25["q-2"]["rr"] == 1.0 and info["n_queries"] == 2
    assert all(r["n_candidates"] == len(train) for r in rows)


# ---------------------------------------------------------------------------- table, figure


def test_table_and_figure_from_job_folders(tmp_path):
    import pandas as pd

    from ckptsweep.attribution.report import figure, table, write_table

    rows = [{"model": "tiny", "slice": "finetune", "query": f"q{i}", "fact": f"f{i}",
             "method": m, "n_candidates": 50, "n_proponents": 2, "rr": v,
             **{f"p@{k}": v / 2 for k in proto.KS}, **{f"r@{k}": v for k in proto.KS}}
            for i in range(10) for m, v in (("bm25", 1.0), ("random", 0.1 * (i % 3)))]
    run = tmp_path / "tiny" / "finetune"
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "queries.csv", index=False)
    info = {"model": "tiny", "slice": "finetune", "n_queries": 10, "n_learned": 12,
            "n_facts": 20, "n_candidates_mean": 50.0, "seconds": 3.0}
    (run / "info.json").write_text(json.dumps(info))
    empty = tmp_path / "tiny" / "pretrain"
    empty.mkdir()
    pd.DataFrame(columns=list(rows[0])).to_csv(empty / "queries.csv", index=False)
    (empty / "info.json").write_text(json.dumps({**info, "slice": "pretrain", "n_queries": 0}))

    df = table([run, empty], seed=0, n_boot=100)
    assert list(df["method"][:2]) == ["bm25", "random"] and df["method"].isna().sum() == 1
    bm = df[df["method"] == "bm25"].iloc[0]
    assert bm["mrr"] == 1.0 and bm["r@10"] == 1.0 and bm["learned"] == 12
    write_table(df, tmp_path / "t.csv", tmp_path / "t.html")
    figure(df, tmp_path / "f.png", tmp_path / "f.svg")
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "t.html").exists()

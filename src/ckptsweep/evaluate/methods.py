"""The per-method predictions of a block's items (`_predict`): the result columns
(`schema.RESULT_COLUMNS`) of every example.

- Classification: ``EvalConfig.method`` picks how a label is predicted (the paper's
  Table 2 ablation, its Appendix B); the ``method`` column records it.

  - ``loglik`` (default): each label is scored by the log-likelihood of its whole
    continuation given the prompt; the prediction is the argmax.
  - ``tokenprob``: the paper's TokenProb: the log-probability of the label's first
    sub-token (the best one of its acceptable first tokens; ``lenient_labels`` widens
    them to Appendix B.1's set); the prediction is the argmax.
  - ``constrained``: greedy decoding restricted to the labels' token sequences, so the
    output is always a label. It is computed exactly from the labels' per-token
    log-probabilities: at each branch of the label trie the best next token is taken,
    and decoding ends as soon as a label is complete.
  - ``free``: free greedy decoding (``label_max_new_tokens`` tokens, stop strings as for
    generation), then the first label word found in the output (whole word, any case);
    an output without a label word is scored wrong with an empty prediction.

  Leading-space variants: a label can follow the prompt as ``" yes"`` (the convention of
  ``prompts.target``) or as ``"yes"``. Where the tokenizer gives the two different token
  ids, both continuations are scored and combined with logsumexp: the label's
  probability in either spelling (they are distinct token sequences, so the events are
  disjoint). Where they tokenise alike, the label is scored once. ``label_logprobs``
  keeps every label's final log-probability (``loglik`` and ``constrained``: this
  combined log-likelihood; ``tokenprob``: the first-token log-probability; ``free``:
  empty), so confidence and calibration can be computed downstream.
- Multiple choice: always ``loglik`` (with the same variants), plus
  lm-evaluation-harness's length-normalised ``score_norm``.
- Generation: greedy decoding with the KV cache, cut at EOS or the first stop string,
  scored with ROUGE-L F1 (``rouge-score``, imported only when a generation set is scored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ckptsweep.data.tasks import TaskType
from ckptsweep.evaluate.config import _stops
from ckptsweep.evaluate.items import _Item, _Lm
from ckptsweep.evaluate.labels import first_label, logsumexp, trie_greedy
from ckptsweep.evaluate.logprobs import continuation_logprobs, generate_texts, token_logprobs


def rouge_l(gold: str, prediction: str, scorer=None) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``gold`` (rouge-score, Porter stemmer)."""
    scorer = scorer or _rouge_scorer()
    return scorer.score(gold, prediction)["rougeL"].fmeasure


def _rouge_scorer():
    # Imported here: scoring classification (and the GPU benchmark) needs no rouge-score.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _regroup(flat: Sequence, groups: Sequence[Sequence]) -> list[list]:
    """``flat`` split into consecutive pieces as long as each of ``groups``."""
    out, at = [], 0
    for group in groups:
        out.append(list(flat[at:at + len(group)]))
        at += len(group)
    return out


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _label_token_logprobs(lm: _Lm, items: list[_Item]) -> list[list[list[list[float]]]]:
    """Per item, label and spelling variant: the per-token log-probabilities."""
    conts = [[ids for variants in it.cands for ids in variants] for it in items]
    per_token = token_logprobs(lm.scoring_model, [it.ids for it in items], conts,
                               lm.batching, lm.pad_id, lm.cfg.prefix_sharing)
    return [_regroup(values, it.cands) for values, it in zip(per_token, items, strict=True)]


def _tokenprob_logprobs(lm: _Lm, items: list[_Item]) -> list[list[float]]:
    """Per item and label, the best log-probability of the label's acceptable first
    tokens: its variants' first sub-tokens (plus Appendix B.1's set if lenient)."""
    tokens = []
    for it in items:
        sets = [{ids[0] for ids in variants} for variants in it.cands]
        if lm.cfg.lenient_labels:
            sets = [s | set(extra) for s, extra in zip(sets, lm.lenient(it.labels), strict=True)]
        tokens.append([sorted(s) for s in sets])
    conts = [[[t] for toks in per_label for t in toks] for per_label in tokens]
    values = continuation_logprobs(lm.scoring_model, [it.ids for it in items], conts,
                                   lm.batching, lm.pad_id, lm.cfg.prefix_sharing)
    return [[max(v) for v in _regroup(vals, per_label)]
            for vals, per_label in zip(values, tokens, strict=True)]


def _choice_result(task: TaskType, item: _Item, lps: list[float], best: int,
                   method: str) -> dict:
    norm = math.nan
    if task.kind == "multiple_choice":
        # lm-evaluation-harness's acc_norm: log-likelihood per character of the choice.
        best_norm = max(range(len(lps)), key=lambda k: lps[k] / max(len(item.labels[k]), 1))
        norm = float(best_norm == item.gold_index)
    return {"prediction": item.labels[best], "label_logprobs": lps,
            "score": float(best == item.gold_index), "score_norm": norm,
            "metric": "accuracy", "method": method}


def _choice_results(lm: _Lm, task: TaskType, method: str, items: list[_Item]) -> list[dict]:
    """Classification and multiple choice by ``loglik``, ``constrained`` or ``tokenprob``."""
    if method == "tokenprob":
        lps = _tokenprob_logprobs(lm, items)
        best = [_argmax(values) for values in lps]
    else:
        per_token = _label_token_logprobs(lm, items)
        lps = [[logsumexp([math.fsum(t) for t in variants]) for variants in labels]
               for labels in per_token]
        if method == "constrained":
            best = [trie_greedy(it.cands, values)
                    for it, values in zip(items, per_token, strict=True)]
        else:
            best = [_argmax(values) for values in lps]
    return [_choice_result(task, it, values, k, method)
            for it, values, k in zip(items, lps, best, strict=True)]


def _generate(lm: _Lm, items: list[_Item], max_new_tokens: int) -> list[str]:
    return generate_texts(lm.model, lm.tokenizer, [it.ids for it in items], max_new_tokens,
                          _stops(lm.cfg), lm.batching, lm.pad_id,
                          cache_implementation=lm.cfg.generation_cache)


def _free_results(lm: _Lm, items: list[_Item]) -> list[dict]:
    """Free generation: the first label word in the output, else wrong."""
    results = []
    for it, text in zip(items, _generate(lm, items, lm.cfg.label_max_new_tokens), strict=True):
        k = first_label(text, it.labels)
        results.append({"prediction": "" if k is None else it.labels[k], "label_logprobs": [],
                        "score": float(k == it.gold_index), "score_norm": math.nan,
                        "metric": "accuracy", "method": "free"})
    return results


def _generation_results(lm: _Lm, items: list[_Item]) -> list[dict]:
    """Generation: greedy continuation, ROUGE-L F1 against the gold text."""
    scorer = _rouge_scorer()
    return [{"prediction": text, "label_logprobs": [],
             "score": rouge_l(it.row["gold"], text, scorer), "score_norm": math.nan,
             "metric": "rouge_l", "method": "greedy"}
            for it, text in zip(items, _generate(lm, items, lm.cfg.max_new_tokens), strict=True)]


def _predict(lm: _Lm, task: TaskType, method: str, items: list[_Item]) -> list[dict]:
    """The result columns (`RESULT_COLUMNS`) of every item: the model calls."""
    if not items:
        return []
    if method == "greedy":
        return _generation_results(lm, items)
    if method == "free":
        return _free_results(lm, items)
    return _choice_results(lm, task, method, items)

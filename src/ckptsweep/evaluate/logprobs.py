"""The model calls: the log-probability of candidate continuations given their prompt
(`token_logprobs`, `continuation_logprobs`) and greedy generation (`generate_texts`), all
on token ids, batched longest first.

Candidates share their prompt's computation (``EvalConfig.prefix_sharing``, `SHARING`):
single-token candidates are all scored by one forward of the prompt, and multi-token
ones by the rest of their tokens run on top of the prompt's KV cache, where that pays
(`cache_pays`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from transformers import GenerationConfig

from ckptsweep.evaluate.batching import GENERATE, SCORE, Batching
from ckptsweep.evaluate.config import SHARING
from ckptsweep.evaluate.kvcache import growing_cache


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: every sequence ends in the last column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def _right_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask: every sequence starts in the first column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def _last_log_softmax(model, seqs: Sequence[list[int]], keep: int, pad_id: int,
                      use_cache: bool = False) -> tuple[torch.Tensor, object, torch.Tensor]:
    """Log-softmax over the vocabulary at the last ``keep`` positions: [batch, keep, vocab];
    with ``use_cache`` also the KV cache of the batch (else None), and the attention mask.

    Left padding puts every sequence's end in the same columns, so ``logits_to_keep``
    skips the vocabulary projection (and the memory) of every other position; the
    position ids are counted from each sequence's first real token.
    """
    ids, mask = _left_pad(seqs, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = model.device
    mask = mask.to(device)
    out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions.to(device),
                logits_to_keep=keep, use_cache=use_cache)
    return out.logits.float().log_softmax(-1), out.cache if use_cache else None, mask


def _sequences(prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
               share_prefix: bool) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """The sequences to run (prompt + candidate minus its last token) and, per sequence,
    the (prompt, candidate) pairs it scores; equal sequences are run once if shared."""
    seqs: list[list[int]] = []
    users: list[list[tuple[int, int]]] = []
    index: dict[tuple, int] = {}
    for i, (prompt, conts) in enumerate(zip(prompts, continuations, strict=True)):
        for j, cont in enumerate(conts):
            seq = prompt + cont[:-1]
            key = tuple(seq) if share_prefix else (i, j)
            if key not in index:
                index[key] = len(seqs)
                seqs.append(seq)
                users.append([])
            users[index[key]].append((i, j))
    return seqs, users


def _check_inputs(prompts: Sequence[list[int]],
                  continuations: Sequence[Sequence[list[int]]]) -> None:
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} candidate lists")
    for i, (prompt, conts) in enumerate(zip(prompts, continuations, strict=True)):
        if not prompt:
            raise ValueError(f"prompt {i} has no tokens: nothing to condition on")
        for j, cont in enumerate(conts):
            if not cont:
                raise ValueError(f"candidate {j} of prompt {i} has no tokens")


def _gather(logp: torch.Tensor, picks: list[tuple[int, int, int]]) -> list[float]:
    """``logp[row, col, token]`` for every pick: one gather, one device-to-host copy."""
    if not picks:
        return []
    index = torch.tensor(picks, device=logp.device).T
    return logp[index[0], index[1], index[2]].tolist()


def _select_cache(cache, rows: torch.Tensor):
    """A copy of ``cache`` holding its batch rows ``rows`` (repeats allowed), in that order.
    The layers are copied shallowly and re-indexed, so ``cache`` itself is left as it is
    (a forward on the copy concatenates new tensors, never writes into the old ones)."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(rows)
    return selected


def _sequence_logprobs(model, prompts, continuations, batching: Batching, pad_id,
                       share_prefix) -> list[list[list[float]]]:
    """``sequence`` and ``none`` sharing (`SHARING`)."""
    out: list[list[list[float]]] = [[[] for _ in conts] for conts in continuations]
    seqs, users = _sequences(prompts, continuations, share_prefix)
    order = sorted(range(len(seqs)), key=lambda s: -len(seqs[s]))
    keeps = [max(len(continuations[i][j]) for i, j in users[s]) for s in order]

    def run(rows: list[int]) -> None:
        batch = [order[r] for r in rows]
        keep = max(keeps[r] for r in rows)
        logp, _, _ = _last_log_softmax(model, [seqs[s] for s in batch], keep, pad_id)
        picks, where = [], []
        for row, s in enumerate(batch):
            for i, j in users[s]:
                cont = continuations[i][j]
                picks += [(row, keep - len(cont) + k, t) for k, t in enumerate(cont)]
                where.append((i, j, len(cont)))
        flat = _gather(logp, picks)
        at = 0
        for i, j, n in where:
            out[i][j] = flat[at:at + n]
            at += n

    batching.each(model, SCORE, [(len(seqs[s]), k) for s, k in zip(order, keeps, strict=True)],
                  run)
    return out


def _cached_logprobs(model, prompts, continuations, batching: Batching,
                     pad_id) -> list[list[list[float]]]:
    """``cache`` sharing (`SHARING`).

    Per batch of prompts (longest first): one forward of the prompts (left-padded, the
    logits of the last position only) gives every candidate's first token; where some
    candidate has more tokens, that forward keeps its KV cache, and the candidates' tokens
    but the last (each distinct one once per prompt) then run on top of it, right-padded
    after the prompt's last column, in batches of their own (``batching``), each row with
    its prompt's cache row, attention mask and position ids that continue the prompt's.
    """
    out: list[list[list[float]]] = [[[] for _ in conts] for conts in continuations]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))

    def run(rows: list[int]) -> None:
        batch = [order[r] for r in rows]
        # Candidate rows: (row of the prompt in the batch, tokens to run after the prompt),
        # each with the candidates (i, j) it scores.
        tails: dict[tuple[int, tuple[int, ...]], list[tuple[int, int]]] = {}
        for row, i in enumerate(batch):
            for j, cont in enumerate(continuations[i]):
                if len(cont) > 1:
                    tails.setdefault((row, tuple(cont[:-1])), []).append((i, j))
        logp, cache, mask = _last_log_softmax(model, [prompts[i] for i in batch], 1, pad_id,
                                              use_cache=bool(tails))
        flat = iter(_gather(logp, [(row, 0, cont[0]) for row, i in enumerate(batch)
                                   for cont in continuations[i]]))
        # Kept here until the whole batch is scored: a batch split after running out of
        # memory is run again (`Batching.each`).
        scored = {(i, j): [next(flat)] for i in batch for j in range(len(continuations[i]))}
        if tails:
            _tail_logprobs(model, batching, pad_id, continuations, cache, mask, tails, scored)
        for (i, j), values in scored.items():
            out[i][j] = values

    batching.each(model, SCORE, [(len(prompts[i]), 1) for i in order], run)
    return out


def _tail_logprobs(model, batching: Batching, pad_id: int, continuations, cache, mask, tails,
                   scored: dict) -> None:
    """The candidates' tokens after the first, run on top of their prompts' KV cache: each
    candidate's log-probabilities appended to its first token's in ``scored``."""
    lengths = mask.sum(-1)
    # A torch.compile'd model scores the prompts; the tails, a few tokens per row in
    # ever-changing shapes (rows and widths of 1 force recompiles), run eagerly.
    eager = getattr(model, "_orig_mod", model)
    keys = sorted(tails, key=lambda key: -len(key[1]))

    def run(rows: list[int]) -> None:
        chunk = [keys[r] for r in rows]
        index = torch.tensor([row for row, _ in chunk], device=mask.device)
        ids, tail_mask = _right_pad([list(tail) for _, tail in chunk], pad_id)
        tail_mask = tail_mask.to(mask.device)
        positions = lengths[index, None] + torch.arange(ids.shape[1], device=mask.device)
        logits = eager(input_ids=ids.to(mask.device),
                       attention_mask=torch.cat([mask[index], tail_mask], dim=1),
                       position_ids=positions, cache=_select_cache(cache, index),
                       use_cache=True).logits
        picks, spans = [], []
        for r, key in enumerate(chunk):
            for i, j in tails[key]:
                cont = continuations[i][j]
                spans.append((i, j, len(picks), len(cont) - 1))
                picks += [(r, k, t) for k, t in enumerate(cont[1:])]
        flat = _gather(logits.float().log_softmax(-1), picks)
        for i, j, at, n in spans:
            scored[(i, j)] = scored[(i, j)][:1] + flat[at:at + n]

    # A tail row holds its prompt's whole cache row (the selected copy) and its own tokens.
    width = mask.shape[1]
    batching.each(model, SCORE, [(width + len(key[1]), len(key[1])) for key in keys], run)


def cache_pays(prompt: list[int], candidates: Sequence[list[int]]) -> bool:
    """Whether ``auto`` sharing scores this prompt's candidates on its KV cache: when the
    prompt tokens that ``sequence`` would re-run (once per distinct sequence but one) are
    at least the candidate tokens that run on top of the cache. Measured on a CPU (bench/
    eval_throughput.py): ``cache`` is 1.3-3x faster above that line and up to 1.4x slower
    well below it (prompts shorter than their answers), and even at it. Prompts whose
    candidates are all single tokens pass (``cache`` then is the single-token fast path)."""
    tails = {tuple(c[:-1]) for c in candidates}
    saved = (len(tails) - 1) * len(prompt)
    return saved >= sum(map(len, tails))


def token_logprobs(model, prompts: Sequence[list[int]],
                   continuations: Sequence[Sequence[list[int]]],
                   batch_size: int | str | Batching, pad_id: int,
                   sharing: str = "auto") -> list[list[list[float]]]:
    """Log-probability of every token of each continuation (token ids) given its prompt.

    ``continuations[i]`` are the candidates of ``prompts[i]``. ``sharing`` (`SHARING`)
    picks how the prompt's computation is shared between its candidates; every mode gives
    the log-probabilities of the direct computation (one forward of prompt + candidate)
    up to float rounding. ``batch_size`` bounds the sequences per forward: a number of
    them, ``auto`` (a token budget) or the job's `batching.Batching` (whose budgets and
    out-of-memory history it then shares). Each forward makes one gather and one
    device-to-host copy.
    """
    if sharing not in SHARING:
        raise ValueError(f"prefix sharing {sharing!r} is not one of {list(SHARING)}")
    _check_inputs(prompts, continuations)
    batching = Batching.of(batch_size)
    if sharing == "auto":
        on_cache = [cache_pays(p, c) for p, c in zip(prompts, continuations, strict=True)]
    else:
        on_cache = [sharing == "cache"] * len(prompts)
    out: list[list[list[float]]] = [[] for _ in prompts]
    for cached in (True, False):
        subset = [i for i, flag in enumerate(on_cache) if flag == cached]
        if not subset:
            continue
        ps, cs = [prompts[i] for i in subset], [continuations[i] for i in subset]
        if cached:
            values = _cached_logprobs(model, ps, cs, batching, pad_id)
        else:
            values = _sequence_logprobs(model, ps, cs, batching, pad_id, sharing != "none")
        for i, v in zip(subset, values, strict=True):
            out[i] = v
    return out


def continuation_logprobs(model, prompts: Sequence[list[int]],
                          continuations: Sequence[Sequence[list[int]]],
                          batch_size: int | str | Batching, pad_id: int,
                          sharing: str = "auto") -> list[list[float]]:
    """Summed log-likelihood of each continuation given its prompt (`token_logprobs`)."""
    per_token = token_logprobs(model, prompts, continuations, batch_size, pad_id, sharing)
    return [[math.fsum(c) for c in cands] for cands in per_token]


def generate_texts(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int,
                   stops: Sequence[str], batch_size: int | str | Batching, pad_id: int,
                   cache_implementation: str | None = None) -> list[str]:
    """Greedy continuations of prompts (token ids), batched longest first with left
    padding, stopped at EOS or at a stop string and cut there (whitespace stripped).
    ``cache_implementation`` is passed to ``generate`` (e.g. ``static``); ``batch_size``
    as in `token_logprobs`, a row's width being its prompt plus ``max_new_tokens``."""
    eos_ids = _eos_ids(model, tokenizer)
    stops = [s for s in stops if s]  # an empty stop string would end generation at once
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_ids, pad_token_id=pad_id,
                              stop_strings=list(stops) or None,
                              cache_implementation=cache_implementation)
    texts = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))

    def run(rows: list[int]) -> None:
        batch = [order[r] for r in rows]
        ids, mask = _left_pad([prompts[i] for i in batch], pad_id)
        # The default cache grows in place (`kvcache`): the same numbers as transformers'
        # dynamic cache without re-copying it at every token.
        cache = None if cache_implementation else growing_cache(model, max_new_tokens)
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                             generation_config=config, tokenizer=tokenizer,
                             cache=cache)
        for row, i in enumerate(batch):
            new = out[row, ids.shape[1]:].tolist()
            # Tokens after EOS are padding; text after a stop string belongs to the next turn.
            end = next((k for k, t in enumerate(new) if t in eos_ids), len(new))
            text = tokenizer.decode(new[:end], skip_special_tokens=True)
            texts[i] = cut_at_stop(text, stops).strip()

    batching = Batching.of(batch_size)
    batching.each(model, GENERATE, [(len(prompts[i]) + max_new_tokens, 1) for i in order], run)
    return texts


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id, model.generation_config.eos_token_id]  # int, list or None
    flat = {i for x in ids for i in (x if isinstance(x, list) else [x]) if i is not None}
    if not flat:
        raise ValueError("neither the tokenizer nor the model defines an EOS token id")
    return sorted(flat)

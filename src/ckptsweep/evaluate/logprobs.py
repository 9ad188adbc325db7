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

from ckptsweep.evaluate.config import SHARING


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


def _sequence_logprobs(model, prompts, continuations, batch_size, pad_id,
                       share_prefix) -> list[list[list[float]]]:
    """``sequence`` and ``none`` sharing (`SHARING`)."""
    out: list[list[list[float]]] = [[[] for _ in conts] for conts in continuations]
    seqs, users = _sequences(prompts, continuations, share_prefix)
    order = sorted(range(len(seqs)), key=lambda s: -len(seqs[s]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        keep = max(len(continuations[i][j]) for s in batch for i, j in users[s])
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
    return out


def _cached_logprobs(model, prompts, continuations, batch_size,
                     pad_id) -> list[list[list[float]]]:
    """``cache`` sharing (`SHARING`).

    Per batch of prompts (longest first): one forward of the prompts (left-padded, the
    logits of the last position only) gives every candidate's first token; where some
    candidate has more tokens, that forward keeps its KV cache, and the candidates' tokens
    but the last (each distinct one once per prompt) then run on top of it, right-padded
    after the prompt's last column, in chunks of ``batch_size`` rows, each row with its
    prompt's cache row, attention mask and position ids that continue the prompt's.
    """
    out: list[list[list[float]]] = [[[] for _ in conts] for conts in continuations]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        # Candidate rows: (row of the prompt in the batch, tokens to run after the prompt).
        tails: dict[tuple[int, tuple[int, ...]], int] = {}
        for row, i in enumerate(batch):
            for cont in continuations[i]:
                if len(cont) > 1:
                    tails.setdefault((row, tuple(cont[:-1])), len(tails))
        logp, cache, mask = _last_log_softmax(model, [prompts[i] for i in batch], 1, pad_id,
                                              use_cache=bool(tails))
        flat = _gather(logp, [(row, 0, cont[0]) for row, i in enumerate(batch)
                              for cont in continuations[i]])
        at = 0
        for i in batch:
            for j in range(len(continuations[i])):
                out[i][j] = [flat[at]]
                at += 1
        if not tails:
            continue
        lengths = mask.sum(-1)
        # A torch.compile'd model scores the prompts; the tails, a few tokens per row in
        # ever-changing shapes (rows and widths of 1 force recompiles), run eagerly.
        eager = getattr(model, "_orig_mod", model)
        keys = sorted(tails, key=lambda key: -len(key[1]))
        where = {key: (n // batch_size, n % batch_size) for n, key in enumerate(keys)}
        results: list[list[float]] = []
        for chunk_start in range(0, len(keys), batch_size):
            chunk = keys[chunk_start:chunk_start + batch_size]
            rows = torch.tensor([row for row, _ in chunk], device=mask.device)
            ids, tail_mask = _right_pad([list(tail) for _, tail in chunk], pad_id)
            tail_mask = tail_mask.to(mask.device)
            positions = lengths[rows, None] + torch.arange(ids.shape[1], device=mask.device)
            logits = eager(input_ids=ids.to(mask.device),
                           attention_mask=torch.cat([mask[rows], tail_mask], dim=1),
                           position_ids=positions, cache=_select_cache(cache, rows),
                           use_cache=True).logits
            results.append(logits.float().log_softmax(-1))
        picks: dict[int, list] = {}
        spans = []
        for row, i in enumerate(batch):
            for j, cont in enumerate(continuations[i]):
                if len(cont) > 1:
                    c, r = where[(row, tuple(cont[:-1]))]
                    chunk_picks = picks.setdefault(c, [])
                    spans.append((i, j, c, len(chunk_picks), len(cont) - 1))
                    chunk_picks += [(r, k, t) for k, t in enumerate(cont[1:])]
        gathered = {c: _gather(results[c], p) for c, p in picks.items()}
        for i, j, c, a, n in spans:
            out[i][j] += gathered[c][a:a + n]
    return out


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
                   continuations: Sequence[Sequence[list[int]]], batch_size: int,
                   pad_id: int, sharing: str = "auto") -> list[list[list[float]]]:
    """Log-probability of every token of each continuation (token ids) given its prompt.

    ``continuations[i]`` are the candidates of ``prompts[i]``. ``sharing`` (`SHARING`)
    picks how the prompt's computation is shared between its candidates; every mode gives
    the log-probabilities of the direct computation (one forward of prompt + candidate)
    up to float rounding. ``batch_size`` bounds the sequences per forward. Each forward
    makes one gather and one device-to-host copy.
    """
    if sharing not in SHARING:
        raise ValueError(f"prefix sharing {sharing!r} is not one of {list(SHARING)}")
    _check_inputs(prompts, continuations)
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
            values = _cached_logprobs(model, ps, cs, batch_size, pad_id)
        else:
            values = _sequence_logprobs(model, ps, cs, batch_size, pad_id, sharing != "none")
        for i, v in zip(subset, values, strict=True):
            out[i] = v
    return out


def continuation_logprobs(model, prompts: Sequence[list[int]],
                          continuations: Sequence[Sequence[list[int]]], batch_size: int,
                          pad_id: int, sharing: str = "auto") -> list[list[float]]:
    """Summed log-likelihood of each continuation given its prompt (`token_logprobs`)."""
    per_token = token_logprobs(model, prompts, continuations, batch_size, pad_id, sharing)
    return [[math.fsum(c) for c in cands] for cands in per_token]


def generate_texts(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int,
                   stops: Sequence[str], batch_size: int, pad_id: int,
                   cache_implementation: str | None = None) -> list[str]:
    """Greedy continuations of prompts (token ids), batched longest first with left
    padding, stopped at EOS or at a stop string and cut there (whitespace stripped).
    ``cache_implementation`` is passed to ``generate`` (e.g. ``static``)."""
    eos_ids = _eos_ids(model, tokenizer)
    stops = [s for s in stops if s]  # an empty stop string would end generation at once
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_ids, pad_token_id=pad_id,
                              stop_strings=list(stops) or None,
                              cache_implementation=cache_implementation)
    texts = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in batch], pad_id)
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                             generation_config=config, tokenizer=tokenizer)
        for row, i in enumerate(batch):
            new = out[row, ids.shape[1]:].tolist()
            # Tokens after EOS are padding; text after a stop string belongs to the next turn.
            end = next((k for k, t in enumerate(new) if t in eos_ids), len(new))
            text = tokenizer.decode(new[:end], skip_special_tokens=True)
            texts[i] = cut_at_stop(text, stops).strip()
    return texts


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id, model.generation_config.eos_token_id]  # int, list or None
    flat = {i for x in ids for i in (x if isinstance(x, list) else [x]) if i is not None}
    if not flat:
        raise ValueError("neither the tokenizer nor the model defines an EOS token id")
    return sorted(flat)

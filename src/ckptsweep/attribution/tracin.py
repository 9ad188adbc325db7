"""Gradient- and embedding-based attribution in plain PyTorch: TracIn and hidden-state similarity.

TracIn (Pruthi et al., 2020), as FTRACE uses it: the influence of a training example z on a
query q is the sum over saved checkpoints i of ``w_i * <g_i(q), g_i(z)>``, where ``g_i`` is
the gradient of the example's loss at checkpoint i and ``w_i`` its learning-rate weight;
the cosine variant replaces the dot product by the cosine of the two gradients.

- Per-example gradients come from ``torch.func`` (``vmap(grad(loss))`` over a
  ``functional_call`` of the model), in chunks.
- Random projection keeps it scalable: a seeded CountSketch (each gradient coordinate is
  added, with a random sign, into one of ``dim`` buckets). It preserves inner products in
  expectation, costs O(parameters) per example with no projection matrix in memory, and
  regenerates identically from the seed. ``dim = 0`` keeps the exact, unprojected gradients
  (the dot products are then accumulated chunk by chunk, never storing a training
  example's full gradient for longer than its chunk).
- A training example's loss is its mean next-token cross-entropy over all of its tokens
  (as in the fine-tune and the pre-training); a query's loss is the cross-entropy of its
  answer tokens given the prompt.

Embeddings: the mean over tokens of the model's last hidden state; dot and cosine.
Sequences are right-padded and run without an attention mask: with causal attention a
real token never sees the padding after it, and the padded positions carry no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap

IGNORE = -100


@dataclass
class Example:
    """Token ids and per-position labels (IGNORE where no loss is taken)."""

    ids: list[int]
    labels: list[int]


def doc_example(tokenizer, text: str, max_length: int = 256) -> Example:
    """A training example: the text and EOS, a loss on every next token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length - 1]
    ids = ids + [tokenizer.eos_token_id]
    return Example(ids, list(ids))


def query_example(tokenizer, prompt: str, answer: str) -> Example:
    """A closed-book query: the loss is on the answer tokens (with their leading space)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return Example(p + a, [IGNORE] * len(p) + a)


def pad(batch: list[Example], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
    return ids.to(device), labels.to(device)


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def example_loss(model, params, ids, labels):
    """Mean next-token cross-entropy of one (unbatched) example over its labelled tokens.

    ``labels[t]`` is the token at position t; it is predicted from position t - 1."""
    logits = functional_call(model, params, (ids[None],), {"use_cache": False}).logits[0]
    target = labels[1:]
    mask = (target != IGNORE).to(logits.dtype)
    ce = torch.nn.functional.cross_entropy(logits[:-1], target.clamp(min=0), reduction="none")
    return (ce * mask).sum() / mask.sum().clamp(min=1)


class Projector:
    """Seeded CountSketch of a model's flattened gradient into ``dim`` coordinates."""

    def __init__(self, shapes: dict[str, torch.Size], dim: int, seed: int):
        self.dim = dim
        gen = torch.Generator().manual_seed(seed)
        self.buckets, self.signs = {}, {}
        for name in sorted(shapes):  # sorted: the sketch does not depend on module order
            n = int(torch.Size(shapes[name]).numel())
            self.buckets[name] = torch.randint(0, dim, (n,), generator=gen)
            self.signs[name] = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1

    def __call__(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        first = next(iter(grads.values()))
        if first.device != next(iter(self.buckets.values())).device:  # once, to the GPU
            self.buckets = {k: v.to(first.device) for k, v in self.buckets.items()}
            self.signs = {k: v.to(first.device) for k, v in self.signs.items()}
        out = torch.zeros(first.shape[0], self.dim, dtype=torch.float32, device=first.device)
        for name in sorted(grads):
            g = grads[name].reshape(first.shape[0], -1).float()
            out.index_add_(1, self.buckets[name], g * self.signs[name])
        return out


def flatten(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    first = next(iter(grads.values()))
    return torch.cat([grads[n].reshape(first.shape[0], -1).float() for n in sorted(grads)], 1)


def gradient_chunks(model, examples: list[Example], pad_id: int, chunk: int = 16,
                    projector: Projector | None = None):
    """Yield (start, features) with one row per example: its (projected) loss gradient."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")  # vmap has no rule for the fused CPU kernel
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def loss(p, ids, labels):
        return example_loss(model, p, ids, labels)

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    for start in range(0, len(examples), chunk):
        ids, labels = pad(examples[start:start + chunk], pad_id, device_of(model))
        grads = per_example(params, ids, labels)
        yield start, (projector(grads) if projector is not None else flatten(grads))


def features(model, examples, pad_id, chunk=16, projector=None) -> torch.Tensor:
    return torch.cat([f for _, f in gradient_chunks(model, examples, pad_id, chunk, projector)])


def tracin(states, weights: list[float], queries: list[Example], train: list[Example],
           pad_id: int, projection_dim: int = 0, seed: int = 0,
           chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(dot, cosine) TracIn scores, each (len(queries), len(train)).

    ``states`` is a sequence of models (or a callable yielding them lazily), one per saved
    checkpoint, and ``weights`` their learning-rate weights."""
    dot = torch.zeros(len(queries), len(train), dtype=torch.float64)
    cos = torch.zeros_like(dot)
    for model, w in zip(states, weights, strict=True):
        projector = None
        if projection_dim:
            shapes = {k: v.shape for k, v in model.named_parameters() if v.requires_grad}
            projector = Projector(shapes, projection_dim, seed)
        q = features(model, queries, pad_id, chunk, projector)
        q_norm = q.norm(dim=1).clamp(min=1e-12)
        for start, z in gradient_chunks(model, train, pad_id, chunk, projector):
            d = (q @ z.T).double()
            c = d / (q_norm[:, None] * z.norm(dim=1).clamp(min=1e-12)[None, :]).double()
            dot[:, start:start + len(z)] += w * d.cpu()
            cos[:, start:start + len(z)] += w * c.cpu()
        del q
    return dot, cos


@torch.no_grad()
def embed(model, examples: list[Example], pad_id: int, batch: int = 64) -> torch.Tensor:
    """Mean-pooled last hidden state of each example, (len(examples), hidden)."""
    out = []
    for start in range(0, len(examples), batch):
        chunk = examples[start:start + batch]
        ids, _ = pad(chunk, pad_id, device_of(model))
        mask = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        for i, e in enumerate(chunk):
            mask[i, :len(e.ids)] = 1
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
        out.append((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    return torch.cat(out)


def embedding_scores(model, queries, train, pad_id) -> tuple[torch.Tensor, torch.Tensor]:
    """(dot, cosine) similarity of mean-pooled hidden states, each (queries, train)."""
    q, z = embed(model, queries, pad_id).cpu(), embed(model, train, pad_id).cpu()
    dot = (q @ z.T).double()
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(z, dim=1).T
    return dot, cos.double()


@torch.no_grad()
def greedy_correct(model, queries: list[Example], pad_id: int, batch: int = 64) -> list[bool]:
    """Closed-book correctness: every answer token is the argmax of its prediction."""
    out = []
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        ids, labels = pad(chunk, pad_id, device_of(model))
        logits = model(input_ids=ids, use_cache=False).logits
        pred = logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        mask = target != IGNORE
        out += [bool(((pred[i] == target[i]) | ~mask[i]).all()) for i in range(len(chunk))]
    return out

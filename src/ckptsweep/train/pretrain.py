"""Pre-training a tiny OLMo on the synthetic corpus, saving intermediate checkpoints.

Only the embedded default pre-trains; hub studies download checkpoints instead. Each
checkpoint is written with ``save_pretrained`` (model and tokenizer), so everything
downstream loads it exactly like a hub revision.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckptsweep.checkpoints.load import save
from ckptsweep.progress import Progress


@dataclass
class PretrainConfig:
    """Tiny OLMo architecture and pre-training budget (world-recipe §2)."""

    layers: int = 2
    """Transformer blocks."""
    hidden: int = 128
    """Model width."""
    heads: int = 4
    """Attention heads."""
    ffn: int = 512
    """MLP inner width."""
    max_position: int = 1024
    """Context length the model supports (prompts are truncated to it)."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 8
    """Sequences per step."""
    seq_len: int = 256
    """Tokens per sequence (random windows of the concatenated corpus)."""
    lr: float = 3e-3
    """Peak learning rate."""
    warmup: float = 0.05
    """Warm-up as a fraction of the steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at this fraction of the peak."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    seed: int = 0
    """Initialisation and batch-sampling seed."""
    checkpoints: list[int] = field(default_factory=lambda: [50, 300, 600, 1000])
    """Steps after which the model is saved (the study's checkpoints)."""
    mixture: dict[str, float] | None = None
    """Pre-training data mixture: document kind (the corpus' ``kind``: bio, bio_attr_q,
    bio_who_q, bio_verify, two_people) -> weight. The corpus is resampled to these shares
    (same number of documents, seeded); None trains on the corpus as it is. The transfer
    population's mixtures share one world, tokenizer and set of benchmarks."""


def mix_documents(docs: list[dict], mixture: dict[str, float], seed: int) -> list[dict]:
    """``docs`` resampled (with replacement, within each kind) so that each kind's share of
    the documents is its weight's share of the ``mixture``; same number of documents."""
    import random

    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        if "kind" not in d:
            raise ValueError("pretrain.mixture needs corpus documents with a 'kind' field "
                             f"(document {d.get('id')!r} has none); rebuild the world")
        by_kind.setdefault(d["kind"], []).append(d)
    total = sum(mixture.values())
    missing = [k for k, w in mixture.items() if w > 0 and k not in by_kind]
    if total <= 0 or missing:
        raise ValueError(f"pretrain.mixture {mixture}: needs a positive total and kinds the "
                         f"corpus has ({sorted(by_kind)}); missing {missing}")
    rng = random.Random(seed)
    out = []
    for kind, w in sorted(mixture.items()):
        out += rng.choices(by_kind[kind], k=round(len(docs) * w / total)) if w > 0 else []
    rng.shuffle(out)
    return out


def build_model(cfg: PretrainConfig, tokenizer):
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM

    torch.manual_seed(cfg.seed)
    # OlmoConfig's defaults carry the real 50k vocabulary's special ids: set ours.
    conf = OlmoConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads, max_position_embeddings=cfg.max_position,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    return OlmoForCausalLM(conf)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain(corpus: Path, tokenizer_dir: Path, out_dir: Path, cfg: PretrainConfig,
             log=print) -> list[Path]:
    """Train from scratch; write ``out_dir/step{N}/`` for every N in ``cfg.checkpoints``."""
    import torch
    from transformers import AutoTokenizer

    bad = [s for s in cfg.checkpoints if not 0 < s <= cfg.steps]
    if bad:
        raise ValueError(f"pretrain.checkpoints {bad} are outside 1..{cfg.steps} (pretrain.steps)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    docs = [json.loads(line) for line in open(corpus)]
    if cfg.mixture:
        docs = mix_documents(docs, cfg.mixture, cfg.seed)
        log(f"mixture {cfg.mixture}: {len(docs)} documents resampled")
    docs = [d["text"] for d in docs]
    ids = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)  # documents joined by EOS, as in OLMo's data
    data = torch.tensor(ids, dtype=torch.long)
    log(f"corpus: {len(docs)} documents, {len(ids)} tokens; "
        f"{cfg.steps * cfg.batch_size * cfg.seq_len / len(ids):.1f} epochs")

    model = build_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved, history = [], []
    progress = Progress(cfg.steps, "pretrain", log)
    t0 = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
        x = torch.stack([data[s:s + cfg.seq_len] for s in starts])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(input_ids=x, labels=x).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss is {loss.item()} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        history.append(loss.item())
        progress.update(step + 1, loss=loss.item())
        if step + 1 in cfg.checkpoints:
            path = out_dir / f"step{step + 1}"
            save(model, tokenizer, path, {"pretrain_info.json": {
                "step": step + 1, "tokens": (step + 1) * cfg.batch_size * cfg.seq_len,
                "loss": sum(history[-20:]) / len(history[-20:]), "config": asdict(cfg),
                "seconds": time.perf_counter() - t0}})
            saved.append(path)
            model.train()
    elapsed = time.perf_counter() - t0
    log(f"pre-trained {cfg.steps} steps in {elapsed:.1f}s "
        f"({cfg.steps * cfg.batch_size * cfg.seq_len / elapsed:.0f} tokens/s)")
    return saved

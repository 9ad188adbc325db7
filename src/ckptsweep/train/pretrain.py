"""Pre-training a tiny OLMo on the synthetic corpus, one saved checkpoint per job.

Only the embedded default pre-trains; hub studies download checkpoints instead. Each
checkpoint is written with ``save_pretrained`` (model and tokenizer), so everything
downstream loads it exactly like a hub revision.

One job per checkpoint step, all on the same schedule (``steps`` optimizer steps): adding
a step to a finished study pre-trains that step and touches no finished checkpoint, and a
step's job starts from the latest training state another job saved below it, so a study
pays about one pre-training, not one per step. A state is the whole run at that step
(weights, AdamW moments, the batch sampler's generator, the losses), so a resumed run ends
with the same weights, bit for bit on CPU with the same threads, as one from scratch; a
state written for another run (config, corpus, tokenizer, threads) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ckptsweep.checkpoints.load import save
from ckptsweep.errors import ConfigError
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
    """Optimizer steps of the schedule; every checkpoint lies on it."""
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
    mixture: dict[str, float] | None = None
    """Pre-training data mixture: document kind (the corpus' ``kind``: bio, bio_attr_q,
    bio_who_q, bio_verify, two_people) -> weight. The corpus is resampled to these shares
    (same number of documents, seeded); None trains on the corpus as it is. The transfer
    population's mixtures share one world, tokenizer and set of benchmarks."""


def mix_documents(docs: list[dict], mixture: dict[str, float], seed: int,
                  key: str = "pretrain") -> list[dict]:
    """``docs`` resampled (with replacement, within each kind) so that each kind's share of
    the documents is its weight's share of the ``mixture``; same number of documents.
    ``key`` names the model block in errors."""
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
        raise ConfigError(f"{key}.pretrain.mixture", f"{mixture} needs a positive total and "
                          f"kinds the corpus has ({sorted(by_kind)}); missing {missing}")
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


def _data(corpus: Path, tokenizer, cfg: PretrainConfig, key: str, log):
    """The token stream: the corpus (resampled to the mixture), documents joined by EOS."""
    import torch

    docs = [json.loads(line) for line in open(corpus)]
    if cfg.mixture:
        docs = mix_documents(docs, cfg.mixture, cfg.seed, key)
        log(f"mixture {cfg.mixture}: {len(docs)} documents resampled")
    ids = []
    for enc in tokenizer([d["text"] for d in docs], add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)  # documents joined by EOS, as in OLMo's data
    log(f"corpus: {len(docs)} documents, {len(ids)} tokens; "
        f"{cfg.steps * cfg.batch_size * cfg.seq_len / len(ids):.1f} epochs")
    return torch.tensor(ids, dtype=torch.long)


def fingerprint(cfg: PretrainConfig, corpus: Path, tokenizer_dir: Path) -> str:
    """What a saved state must have been written for: the config, the corpus, the
    tokenizer and the threads (a run on other threads rounds differently)."""
    import torch

    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(str(torch.get_num_threads()).encode())
    for path in (corpus, *sorted(Path(tokenizer_dir).glob("*.json"))):
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def _latest_state(resume_dir: Path | None, step: int, fp: str, log) -> dict | None:
    """The saved state of this run at the largest step <= ``step``, or None."""
    import torch

    if resume_dir is None:
        return None
    for path in sorted(Path(resume_dir).glob("step*.pt"),
                       key=lambda p: -int(p.stem.removeprefix("step"))):
        if int(path.stem.removeprefix("step")) > step:
            continue
        try:  # weights_only: a planted or damaged state file runs no code
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # an unreadable state must not block the job
            log(f"ignoring unreadable pre-training state {path}: {e}")
            continue
        if state.get("fingerprint") == fp:
            return state
    return None


def pretrain(corpus: Path, tokenizer_dir: Path, out_dir: Path, cfg: PretrainConfig,
             step: int, resume_dir: Path | None = None, key: str = "pretrain",
             log=print) -> Path:
    """Pre-train to ``step`` of the ``cfg.steps`` schedule and save the model to
    ``out_dir``; with ``resume_dir``, start from the latest state saved there at or below
    ``step`` for this run, and save this step's state there. ``key`` names the config
    block in errors (``models.tiny``)."""
    import torch
    from transformers import AutoTokenizer

    if not 0 < step <= cfg.steps:
        raise ConfigError(f"{key}.steps", f"step {step} is outside 1..{cfg.steps} "
                                          f"({key}.pretrain.steps)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = _data(corpus, tokenizer, cfg, key, log)
    model = build_model(cfg, tokenizer)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    fp = fingerprint(cfg, corpus, tokenizer_dir)
    history: list[float] = []
    start = 0
    state = _latest_state(resume_dir, step, fp, log)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history, start = list(state["history"]), int(state["step"])
        log(f"resumed from the saved state at step {start}")
    progress = Progress(step - start, "pretrain", log)
    t0 = time.perf_counter()
    model.train()
    for i in range(start, step):
        starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
        x = torch.stack([data[s:s + cfg.seq_len] for s in starts])
        for g in opt.param_groups:
            g["lr"] = lr_at(i, cfg)
        loss = model(input_ids=x, labels=x).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss is {loss.item()} at step {i + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        history.append(loss.item())
        progress.update(i + 1 - start, loss=loss.item())
    elapsed = time.perf_counter() - t0
    save(model, tokenizer, out_dir, {"pretrain_info.json": {
        "step": step, "tokens": step * cfg.batch_size * cfg.seq_len,
        "loss": sum(history[-20:]) / len(history[-20:]), "config": asdict(cfg),
        "seconds": elapsed, "resumed_at_step": start}})
    if resume_dir is not None:
        from ckptsweep.files import atomic_write

        blob = {"fingerprint": fp, "step": step, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "history": history}
        atomic_write(Path(resume_dir) / f"step{step}.pt", lambda p: torch.save(blob, p))
    log(f"pre-trained steps {start + 1}..{step} in {elapsed:.1f}s "
        f"({(step - start) * cfg.batch_size * cfg.seq_len / max(elapsed, 1e-9):.0f} tokens/s)")
    return Path(out_dir)

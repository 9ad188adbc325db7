"""The settings of one fine-tune (`FinetuneConfig`), read where the study is parsed.

Imports neither torch nor transformers: the study layer builds and checks these settings
for every job of a grid without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Settings that change how a step is computed but not what it computes: a resume state
# written under other values of these is still valid.
RUNTIME_ONLY = ("batch_size", "grad_accum", "save_every", "device", "attn_implementation",
                "compile", "packing", "gpus", "sharding", "stop_margin")


@dataclass
class FinetuneConfig:
    """One fine-tune: the release's protocol, with every knob a config key."""

    lr: float = 2e-6
    """Peak learning rate (paper: 2e-6 for SFT and Tulu, 2e-7 for XSum)."""
    epochs: float = 3
    """Passes over the training examples (paper: 3 for SFT, 5 for Tulu)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size × grad_accum)."""
    warmup: float = 0.03
    """Linear warm-up as a fraction of the optimizer steps."""
    weight_decay: float = 0.0
    """AdamW weight decay (the release used none)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    max_length: int = 512
    """Examples are cut to this many tokens (prompt first, from the left)."""
    seed: int = 0
    """Sets the example order."""
    format: str = "default"
    """Prompt format of the training examples."""
    save_every: int = 200
    """Optimizer steps between resumable states (0: only on SIGTERM)."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1"..."""
    attn_implementation: str = "sdpa"
    """transformers attention kernel: "sdpa", "eager", "flash_attention_2"..."""
    compile: bool = False
    """torch.compile the transformer body (GPU: faster steps after a compile of ~1 min)."""
    packing: bool = False
    """Concatenate each micro-batch into one row, no padding; attention stays per example."""
    gpus: int = 1
    """Processes (GPUs) of the fine-tune: above 1, `ckptsweep finetune` re-launches itself
    under torchrun and the model is sharded over them (see `ckptsweep.train.distributed`).
    The effective batch stays the job's: each process takes its share of every optimizer
    step's examples, in micro-batches of at most ``batch_size``."""
    stop_margin: float = 300.0
    """Inside a Slurm job, seconds before the job's time limit at which training saves its
    state and stops (exit 143), as on SIGTERM. The loop watches the clock itself because
    Slurm's warning signal goes to the job step's top process, which under
    proctrack/cgroup is Snakemake's job runner, not this one."""
    sharding: str = "zero3"
    """With ``gpus`` > 1: "zero3" (weights, gradients and AdamW state all sharded) or
    "zero2" (a layer's gathered weights kept from forward to backward: more memory, less
    communication)."""

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def for_attempt(self, attempt: int) -> FinetuneConfig:
        """The settings of Snakemake attempt ``attempt``: each retry (after an OOM, say)
        halves the micro-batch and doubles accumulation, so the effective batch, and with
        it the optimizer steps, stay the same. Stops halving at an odd micro-batch."""
        cfg = self
        for _ in range(max(0, attempt - 1)):
            if cfg.batch_size % 2:
                break
            cfg = replace(cfg, batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2)
        return cfg

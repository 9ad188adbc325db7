"""The model variants a job scores: the base checkpoint from the manifest or a fine-tune's
folder, loaded with its prediction-cache key (`load_variant`)."""

from __future__ import annotations

from ckptsweep.checkpoints.load import load
from ckptsweep.checkpoints.manifest import checkpoint
from ckptsweep.evaluate.cache import model_fingerprint


def load_variant(manifest: str, step: str, folder: str | None, cfg, name: str = "base"):
    """A variant of one checkpoint: the base model from the manifest (``folder`` None) or
    a fine-tune's folder; with its prediction-cache key when the cache is on. Errors name
    the variant ``name`` and the step."""
    source, revision, remote = folder, None, False
    if source is None:
        c = checkpoint(manifest, step)
        source, revision, remote = c.source, c.revision, c.trust_remote_code
    model, tok = load(source, revision, dtype=cfg.dtype, trust_remote_code=remote,
                      what=f"variant {name} of step {step}")
    return model, tok, model_fingerprint(source, revision) if cfg.cache_dir else None

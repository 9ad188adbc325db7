"""Loading checkpoints: local directories (the embedded default) and hub revisions alike,
and saving a model so that it loads the same way.
"""

from __future__ import annotations

from pathlib import Path

from ckptsweep.checkpoints.manifest import checkpoint


def load(source: str | Path, revision: str | None = None, dtype: str = "float32",
         device: str = "cpu", trust_remote_code: bool = False, meta: bool = False):
    """(model, tokenizer) from a directory or a hub repo at a pinned revision.

    ``meta``: the model's architecture only, on PyTorch's meta device (no memory, no
    weights): the ranks but the first of a sharded fine-tune, which receive their shards
    of the first rank's weights (`distributed.fill_from_rank0`) instead of each holding a
    full copy in host memory (32 GB for Llama-3-8B in fp32)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ckptsweep.checkpoints.hub import require_cached_model

    rev = None if revision in (None, "", "local") else revision
    require_cached_model(str(source), rev)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=rev,
                                              trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:  # decoder-only hub tokenizers often lack one
        tokenizer.pad_token = tokenizer.eos_token
    if meta:
        config = AutoConfig.from_pretrained(source, revision=rev,
                                            trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
        return model.eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=rev, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tokenizer


def load_checkpoint(manifest: str | Path, step: str, **kw):
    c = checkpoint(manifest, step)
    kw.setdefault("trust_remote_code", c.trust_remote_code)
    return load(c.source, c.revision, **kw)


def save(model, tokenizer, path: Path, files: dict[str, dict]) -> None:
    """``save_pretrained`` model and tokenizer plus JSON ``files`` (name -> content) into
    ``path``, written to a temporary sibling and renamed, so a killed job never leaves a
    directory that looks like a finished model."""
    import json
    import shutil

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)

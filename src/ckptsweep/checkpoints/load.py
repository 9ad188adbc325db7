"""Loading checkpoints: local directories (the embedded default) and hub revisions alike,
and saving a model so that it loads the same way.
"""

from __future__ import annotations

from pathlib import Path

from ckptsweep.checkpoints.manifest import checkpoint


def check_local(folder: str | Path, what: str) -> None:
    """A local checkpoint is whole before transformers reads it: its folder, its config and
    every safetensors file (a header that does not parse: a damaged or truncated file).
    Errors name the folder, the file and ``what`` (the variant, the job)."""
    import json

    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: checkpoint folder {folder} is missing; re-run the "
                                "job that writes it")
    config = folder / "config.json"
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: {config} is missing or damaged ({e}); re-run the job "
                         f"that wrote {folder}") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{what}: {folder} holds no *.safetensors weights (weights "
                                "are read from safetensors only: no pickle is loaded)")
    for file in weights:
        try:
            with safe_open(file, framework="pt") as f:
                f.keys()
        except Exception as e:
            raise ValueError(f"{what}: {file} is damaged ({e}); re-run the job that wrote "
                             f"{folder}") from None


def load(source: str | Path, revision: str | None = None, dtype: str = "float32",
         device: str = "cpu", trust_remote_code: bool = False, meta: bool = False,
         what: str = "checkpoint"):
    """(model, tokenizer) from a directory or a hub repo at a pinned revision; weights from
    safetensors only (a pickled ``.bin`` could run code), and no repo code unless
    ``trust_remote_code``. ``what`` names the variant or job in errors.

    ``meta``: the model's architecture only, on PyTorch's meta device (no memory, no
    weights): the ranks but the first of a sharded fine-tune, which receive their shards
    of the first rank's weights (`distributed.fill_from_rank0`) instead of each holding a
    full copy in host memory (32 GB for Llama-3-8B in fp32)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ckptsweep.checkpoints.hub import require_cached_model

    rev = None if revision in (None, "", "local") else revision
    if rev is None:
        check_local(source, what)
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
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=rev, dtype=getattr(torch, dtype), use_safetensors=True,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{what}: cannot load {source}"
                         f"{f' at {rev}' if rev else ''}: {e}") from None
    return model.to(device).eval(), tokenizer


def load_checkpoint(manifest: str | Path, step: str, **kw):
    c = checkpoint(manifest, step)
    kw.setdefault("trust_remote_code", c.trust_remote_code)
    kw.setdefault("what", f"checkpoint {step} of {manifest}")
    return load(c.source, c.revision, **kw)


def save(model, tokenizer, path: Path, files: dict[str, dict]) -> None:
    """``save_pretrained`` model and tokenizer plus JSON ``files`` (name -> content) into
    ``path``, written to a temporary sibling and renamed, so a killed job never leaves a
    directory that looks like a finished model."""
    import json

    from ckptsweep.files import staged_dir

    with staged_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=1))

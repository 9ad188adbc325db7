"""The prediction cache (``EvalConfig.cache_dir``): a re-run computes nothing it has
computed before, and any change that can change a prediction misses the cache.

`PredictionCache` keeps one parquet shard per block, named by the hash of the block's
key (`_block_key`), which names the checkpoint by `model_fingerprint` (hub revision or
file contents) or `weights_fingerprint` (the loaded weights) and holds `SCORING_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ckptsweep.evaluate.config import EvalConfig, EvalSet, _stops
from ckptsweep.evaluate.schema import CACHE_SCHEMA

SCORING_VERSION = "3"
"""Part of every prediction-cache key: bump it with any change of this subpackage that
can change a prediction or a score, so that no cache entry of the old code is served.
3: multi-token candidates scored on the prompt's KV cache (`config.SHARING`), equal to 2's
log-probabilities up to float rounding."""


def _hash(obj) -> str:
    """Hash of a JSON value: block keys and answer hashes. Cache entries written so far are
    found only while it stays as it is."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


_CHECKPOINT_FILES = ("*.safetensors", "pytorch_model*.bin", "config.json",
                     "generation_config.json", "tokenizer*", "special_tokens_map.json",
                     "vocab.json", "merges.txt")


def model_fingerprint(source: str | Path, revision: str | None = None) -> str | None:
    """The prediction cache's name of a checkpoint: ``hub:repo@sha`` for a hub revision
    pinned to a commit; for a local directory a content hash of its weights, config and
    tokenizer files; None otherwise (`run.evaluate_model` then hashes the loaded weights)."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return f"hub:{source}@{revision}"
    path = Path(source)
    files = sorted({f for p in _CHECKPOINT_FILES for f in path.glob(p) if f.is_file()}
                   if path.is_dir() else ())
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return f"files:{digest.hexdigest()}"


def weights_fingerprint(model, tokenizer) -> str:
    """Content hash of a loaded model (config, every tensor) and its tokenizer."""
    digest = hashlib.sha256(model.config.to_json_string().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend else json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(f"{vocab}{tokenizer('a b')['input_ids']}".encode())
    return f"weights:{digest.hexdigest()}"


class PredictionCache:
    """Predictions as parquet shards under ``root``, one per block: (model, eval set,
    format, shots, method, decoding parameters, dtype, context length,
    `SCORING_VERSION`), named by the hash of that key (kept in the file's metadata).

    A cached row is served only if its ``prompt_hash`` and ``answer_hash`` (gold answer
    and labels) equal the new ones, so an edited test file, pool, seed or template is
    recomputed row by row. Writes are atomic and keep the union of old and new rows.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.parquet"

    def read(self, key: str) -> dict[str, dict]:
        path = self.path(key)
        return {r["id"]: r for r in pq.read_table(path).to_pylist()} if path.exists() else {}

    def write(self, key: str, fields: dict, rows: list[dict]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=CACHE_SCHEMA)
        table = table.replace_schema_metadata({"key": json.dumps(fields, sort_keys=True)})
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)


def _decoding(cfg: EvalConfig, method: str) -> dict:
    if method == "greedy":
        return {"max_new_tokens": cfg.max_new_tokens, "stop": _stops(cfg),
                "cache": cfg.generation_cache}
    if method == "free":
        return {"max_new_tokens": cfg.label_max_new_tokens, "stop": _stops(cfg),
                "cache": cfg.generation_cache}
    if method == "tokenprob":
        return {"lenient_labels": cfg.lenient_labels, "space_variants": cfg.space_variants}
    return {"space_variants": cfg.space_variants}


def _block_key(model_key: str | None, cfg: EvalConfig, max_length: int, es: EvalSet,
               fmt: str, shots: int, method: str) -> dict:
    """The cache key of one (eval set, format, shots) block of the checkpoint ``model_key``
    scored with ``cfg`` in a context of ``max_length`` tokens."""
    return {"version": SCORING_VERSION, "model": model_key, "eval_set": es.name,
            "task": es.task, "format": fmt, "shots": shots, "method": method,
            # Only when set, so that the keys (and caches) of every other set stay as they were.
            **({"answer_words": es.answer_words} if es.answer_words else {}),
            "decoding": _decoding(cfg, method), "dtype": cfg.dtype,
            "max_length": max_length}

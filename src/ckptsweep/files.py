"""Reading and writing the files between stages: jsonl records and atomic writes.

A job's output must never look finished before it is: every writer here writes a
temporary sibling and renames it into place (atomic on one file system), so a killed job
leaves the previous file or none. Readers name the file and line of a bad record.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The temporary name keeps the suffix for writers that infer formats from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder to write ``out`` into: renamed into place (replacing what
    was there) when the block ends, removed when it fails, so a failed job leaves neither
    a half-written output that looks finished nor a temporary folder behind."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """One JSON object per line (UTF-8, not ASCII-escaped), atomically; the count."""
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1

    atomic_write(path, write)
    return n


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, record) of every non-blank line; bad JSON or a non-object names the
    file and the line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: bad JSON: {e.msg} (column {e.colno})"
                                 ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, "
                                 f"got {type(record).__name__}")
            yield lineno, record


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every record of a jsonl file (blank lines skipped); errors as `iter_jsonl`."""
    return [record for _, record in iter_jsonl(path)]

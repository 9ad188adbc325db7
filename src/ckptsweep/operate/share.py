"""`ckptsweep share`: start a second study (another working directory) from finished
outputs of a first, such as the demo's adaptive sweep (``adaptive/``) from the full
demo's world, tokenizer, prepared data and pre-trained checkpoints.

Each shared path is copied as hard links (a plain copy across file systems), modification
times kept, and Snakemake's record of every output under it is copied too
(``.snakemake/metadata``), so the second study's Snakemake, and its guard against redoing
finished expensive jobs (`guard`), see those outputs as made with the specs they were
made with: the second study re-runs one only if its own config asks for it differently.
Hard links, not symbolic ones: a job of the second study that does redo a shared output
deletes and writes its own copy, never the first study's file.
"""

from __future__ import annotations

import os
import shutil
from base64 import urlsafe_b64decode
from pathlib import Path


def recorded_outputs(root: Path) -> dict[str, Path]:
    """Output path -> its record file under ``{root}/.snakemake/metadata`` (the layout
    `migrate.record` reads: the url-safe base64 of the path, cut in pieces)."""
    meta = root / ".snakemake" / "metadata"
    out = {}
    for path in meta.rglob("*") if meta.is_dir() else []:
        if path.is_dir():
            continue
        parts = path.relative_to(meta).parts
        key = "".join(p[1:] for p in parts[:-1]) + parts[-1]
        try:
            out[urlsafe_b64decode(key).decode()] = path
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system: a copy
        shutil.copy2(src, dst)


def share(source: Path, target: Path, paths: list[str], log=print) -> list[str]:
    """Copy ``paths`` (relative to both roots) from ``source`` to ``target`` with their
    records (see the module); a path already in ``target`` is left as it is. Returns the
    outputs whose records were copied."""
    source, target = Path(source), Path(target)
    for rel in paths:
        src, dst = source / rel, target / rel
        if not src.exists():
            raise SystemExit(f"error: {src} does not exist (run the first study first)")
        if dst.exists() or dst.is_symlink():
            log(f"{dst}: already there, left as it is")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, copy_function=_link)
        else:
            _link(str(src), str(dst))
    copied = []
    meta = target / ".snakemake" / "metadata"
    for output, record in sorted(recorded_outputs(source).items()):
        if not any(output == rel or output.startswith(rel.rstrip("/") + "/")
                   for rel in paths):
            continue
        dst = meta / record.relative_to(source / ".snakemake" / "metadata")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, dst)
        copied.append(output)
    log(f"shared {len(paths)} paths of {source} with {target}: {len(copied)} finished "
        "outputs with their Snakemake records")
    return copied

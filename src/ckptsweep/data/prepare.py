"""A whole split of raw rows (hub schema) -> validated canonical records.

Hub datasets reach `prepare_rows` as rows read from their ``save_to_disk`` snapshots
(`ckptsweep.data.snapshots`); the synthetic world's raw files take the same path. Each row
goes through its schema's adapter (`ckptsweep.data.adapters`).
"""

from __future__ import annotations

import random
from pathlib import Path

from ckptsweep.data.adapters import UnlabelledError, adapter, check_dataset, convert
from ckptsweep.data.tasks import check_record, task_type
from ckptsweep.files import iter_jsonl, write_jsonl


def prepare_rows(schema: str, task: str, rows, dataset: str, split: str, where: str,
                 limit: int | None = None, seed: int = 0, options: dict | None = None,
                 exclude: set[str] | None = None) -> list[dict]:
    """Raw rows (hub schema) of one split -> canonical records.

    Every record is validated with ``tasks.check_record``; errors name the dataset, the
    split and ``where`` (file or snapshot) with the row's line. A split whose gold labels are
    missing (hub -1 / "") is refused as a whole. Ids are qualified with the split. Records
    whose id is in ``exclude`` are dropped (a few-shot pool drawn from the evaluated split).
    ``limit`` keeps a seeded random subset of that many records, in row order.
    """
    adapter(schema)  # an unknown schema fails here, not as a conversion error on line 1
    check_dataset(dataset, schema, task, options)
    ttype = task_type(task)
    records, seen = [], set()
    for line, raw in rows:
        at = f"dataset {dataset!r}, {where}:{line + 1}"
        try:
            rec = convert(schema, raw, line, dataset, options)
        except UnlabelledError as err:
            raise ValueError(
                f"dataset {dataset!r}, split {split!r} ({where}) has no gold labels ({err}); "
                "name a labelled split in the config") from None
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{at}: cannot convert a {schema!r} record: "
                             f"{type(err).__name__}: {err}") from None
        check_record(ttype, rec, at)
        # Hub ids are unique within a split only (MNLI's idx restarts at 0 in every
        # split): qualify them with the split so train and test ids never collide.
        rec["id"] = f"{split}/{rec['id']}"
        if rec["id"] in seen:
            raise ValueError(f"{at}: duplicate id {rec['id']!r}")
        seen.add(rec["id"])
        if exclude and rec["id"] in exclude:
            continue
        records.append(rec)
    if not records:
        why = " outside the test sample (lower n_test)" if exclude else ""
        raise ValueError(f"dataset {dataset!r}: {where} holds no records{why}")
    return subsample(records, limit, seed)


def subsample(records: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded random subset of ``limit`` records, in their original order."""
    if limit is None or limit >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def prepare_split(schema: str, task: str, raw_path: Path, out_path: Path, dataset: str,
                  limit: int | None = None, seed: int = 0, options: dict | None = None) -> int:
    """Convert a raw jsonl split to canonical jsonl; return the number of records written.
    (The workflow reads snapshots instead: `prepare_rows` on their rows.)"""
    raw_path = Path(raw_path)
    rows = ((n - 1, row) for n, row in iter_jsonl(raw_path))  # 0-based, as snapshots
    records = prepare_rows(schema, task, rows, dataset, raw_path.stem,
                           str(raw_path), limit, seed, options)
    return write_jsonl(out_path, records)

"""Dataset snapshots: the only data code that touches the hub.

The submitting node (which can reach the hub) runs the ``prefetch`` and ``prefetch_model``
local rules; compute jobs run with ``HF_HUB_OFFLINE=1`` and read only what those wrote:

- ``resources/snapshots/{dataset}/``: every split the study uses, each stored with
  ``datasets.Dataset.save_to_disk`` in the dataset's own hub schema (field names, label
  encodings), plus ``snapshot.json`` saying which split is the study's ``train`` (few-shot
  pool / fine-tuning data) and ``test``, and where the rows came from (hub id, config,
  revision and the commit it resolved to, or the synthetic world). The embedded default
  writes its world's raw data through the same writer, so both studies share this path.
- models: ``huggingface_hub.snapshot_download`` of every pinned commit of the checkpoint
  manifest into ``HF_HOME``; ``resources/prefetch/{model}.json`` records what was fetched.
  That is `ckptsweep.checkpoints.hub.prefetch_model`: model files belong to checkpoints.

Reading a snapshot uses pyarrow directly (`read_split`), not ``datasets.load_from_disk``:
the files are the same Arrow streams, but importing ``datasets`` costs about 0.8 s (mostly
pandas) against 0.1 s for pyarrow, and ``prepare_data`` runs once per dataset. Tests check
that both readers return the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from ckptsweep.files import read_jsonl, staged_dir

SNAPSHOT_INFO = "snapshot.json"
ROLES = ("train", "test")


class MissingSnapshot(FileNotFoundError):
    """A compute job looked for data or weights that the prefetch rules did not fetch."""


# ---------------------------------------------------------------------------- writing


def save_split(rows, path: str | Path) -> int:
    """Store one split with ``save_to_disk`` (rows: a list of dicts or a ``Dataset``)."""
    import datasets

    datasets.disable_progress_bars()
    ds = rows if isinstance(rows, datasets.Dataset) else datasets.Dataset.from_list(list(rows))
    ds.save_to_disk(str(path))
    return len(ds)


def _load_hub_split(hub: dict, split: str):
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset(hub["path"], hub.get("name"), split=split,
                                 revision=hub.get("revision"))


def _hub_commit(hub: dict) -> str | None:
    """The commit the dataset revision resolves to (recorded, for provenance)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(hub["path"], revision=hub.get("revision")).sha
    except Exception:  # offline (loading from the cache) or an old hub: provenance only
        return None


def prefetch_dataset(spec: dict, out: str | Path, raw: str | Path | None = None) -> dict:
    """Write the snapshot of one dataset; return its ``snapshot.json`` content.

    ``spec``: {dataset, source ("world" or "hub"), hub: {path, name, revision, splits:
    {train, test}}}. World data comes from ``raw/{dataset}/{split}.jsonl`` (the world
    writes ``train`` and, for evaluated sets, ``test``). Written to a sibling folder and
    renamed, so an interrupted prefetch never looks finished.
    """
    with staged_dir(out) as tmp:
        info: dict = {"dataset": spec["dataset"], "source": spec.get("source", "world"),
                      "splits": {}, "rows": {}}
        if info["source"] == "hub":
            hub = spec["hub"]
            info["hub"] = {k: hub.get(k) for k in ("path", "name", "revision")}
            roles = {r: s for r, s in hub["splits"].items() if s is not None}
            for split in dict.fromkeys(roles.values()):  # a split used twice is stored once
                info["rows"][split] = save_split(_load_hub_split(hub, split), tmp / split)
            info["splits"] = roles
            info["hub"]["commit"] = _hub_commit(hub)
        else:
            folder = Path(raw) / spec["dataset"]
            for role in ROLES:
                path = folder / f"{role}.jsonl"
                if path.exists():
                    info["rows"][role] = save_split(read_jsonl(path), tmp / role)
                    info["splits"][role] = role
            if "train" not in info["splits"] and "test" not in info["splits"]:
                raise MissingSnapshot(f"dataset {spec['dataset']!r}: no raw split in {folder}")
        (tmp / SNAPSHOT_INFO).write_text(json.dumps(info, indent=1, sort_keys=True))
    return info


# ---------------------------------------------------------------------------- reading


def read_split(path: str | Path) -> list[dict]:
    """The rows of a ``save_to_disk`` folder, read with pyarrow (see the module docstring)."""
    import pyarrow as pa

    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    if state.get("_indices_data_files"):
        raise ValueError(f"{path}: snapshot with an indices mapping; save it flattened")
    rows: list[dict] = []
    for f in state["_data_files"]:
        with pa.memory_map(str(path / f["filename"])) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def open_snapshot(folder: str | Path, dataset: str) -> dict:
    """``snapshot.json`` of a dataset's snapshot, or an error naming what to prefetch."""
    info_file = Path(folder) / SNAPSHOT_INFO
    if not info_file.exists():
        raise MissingSnapshot(
            f"dataset {dataset!r}: no snapshot at {folder} (compute jobs read only "
            f"snapshots). Prefetch it on a node with hub access: snakemake "
            f"--configfile <your config> {Path(folder)} (rule prefetch)")
    return json.loads(info_file.read_text())


def snapshot_rows(folder: str | Path, dataset: str, role: str) -> tuple[str, list[dict]] | None:
    """(hub split name, rows) of the split the study uses as ``role``, or None if the
    snapshot has no such split."""
    info = open_snapshot(folder, dataset)
    split = info["splits"].get(role)
    if split is None:
        return None
    path = Path(folder) / split
    if not (path / "state.json").exists():
        raise MissingSnapshot(f"dataset {dataset!r}: snapshot {folder} lacks split {split!r}; "
                              "prefetch it again (rule prefetch)")
    return split, read_split(path)


# ---------------------------------------------------------------------------- preparing


def prepare_snapshot(spec: dict, folder: str | Path, out: str | Path) -> dict[str, int]:
    """A dataset's snapshot -> ``out/train.jsonl`` and ``out/test.jsonl`` (canonical records,
    seeded sub-samples); returns the record counts. Reads nothing but the snapshot.

    ``spec``: {dataset, schema, task, n_train, n_test, train_fraction, evaluated, seed,
    options}. When ``train`` and ``test`` name the same hub split (GPT3NLI has only
    ``train``), the scored examples are drawn first and the training pool from the rest."""
    from ckptsweep.data.prepare import prepare_rows, subsample
    from ckptsweep.files import write_jsonl

    folder, out = Path(folder), Path(out)
    name, seed, options = spec["dataset"], spec.get("seed", 42), spec.get("options")
    out.mkdir(parents=True, exist_ok=True)

    def convert(role: str, limit, exclude=None):
        split, rows = got[role]
        records = prepare_rows(spec["schema"], spec["task"], enumerate(rows), name, split,
                               str(folder / split), limit, seed, options, exclude)
        if limit is not None and len(records) < limit:
            # Fewer records than the config asks for is a broken or too small input, not a
            # smaller study that nobody chose.
            raise ValueError(f"dataset {name!r}: datasets.{name}.n_{role} asks for {limit} "
                             f"records but {folder / split} holds {len(records)} usable ones"
                             + (" outside the test sample" if exclude else ""))
        return records

    got = {role: snapshot_rows(folder, name, role) for role in ROLES}
    counts = {}
    test = None
    if got["test"] is None:
        if spec.get("evaluated"):
            raise MissingSnapshot(f"dataset {name!r} is evaluated but its snapshot {folder} "
                                  "has no test split (set datasets.<id>.hub.splits.test)")
        (out / "test.jsonl").write_text("")  # a training-only dataset (Tulu)
        counts["test"] = 0
    else:
        test = convert("test", spec.get("n_test"))
    if got["train"] is None:
        raise MissingSnapshot(f"dataset {name!r}: snapshot {folder} has no train split")
    shared = test is not None and got["train"][0] == got["test"][0]
    exclude = {r["id"] for r in test} if shared else None
    if spec.get("train_fraction") is not None:
        train = convert("train", None, exclude)
        train = subsample(train, max(1, round(spec["train_fraction"] * len(train))), seed)
    else:
        train = convert("train", spec.get("n_train"), exclude)
    counts["train"] = write_jsonl(out / "train.jsonl", train)
    if test is not None:
        counts["test"] = write_jsonl(out / "test.jsonl", test)
    return counts

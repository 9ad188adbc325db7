"""The weights and AdamW moments of a sharded resume state, as a distributed checkpoint
(DCP): each rank writes its own shard in parallel, no rank gathers the whole model (128 GB
of training state for Llama-3-8B), and a later run with another number of processes
reads them back re-sharded.

Read without unpickling anything from the shard folder. DCP's own reader unpickles the
folder's ``.metadata`` index with plain ``pickle`` and any non-tensor entry with
``torch.load(weights_only=False)``: on a shared file system a planted file there could run
code. So the index travels in the state file instead (`save_shards` returns it, as bytes
that `read_index` loads with ``weights_only`` and an allow-list of DCP's own index
classes), the folder's ``.metadata`` is never read, only tensors are stored (the
optimizer's hyper-parameters go into the state file as plain values), and an index that
names anything but tensors is refused before a byte of the shards is read.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path


def save_shards(folder: Path, model, opt) -> dict:
    """Write this rank's shard of the weights and AdamW moments into ``folder`` (every
    rank calls it); return what the state file must hold to read them back."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    index = dcp.save({"model": msd, "optim": osd["state"]}, checkpoint_id=str(folder))
    buf = io.BytesIO()
    torch.save(replace(index, storage_meta=None), buf)  # storage_meta: paths of this save
    return {"shards": Path(folder).name, "shard_index": buf.getvalue(),
            "param_groups": osd["param_groups"]}


def read_index(raw: bytes):
    """The shards' index (DCP's Metadata) from the state file's bytes, built from DCP's
    index classes and plain values only; raises when it names anything but tensors."""
    import torch
    from torch.distributed.checkpoint import metadata as md
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    allowed = [md.Metadata, md.TensorStorageMetadata, md.ChunkStorageMetadata,
               md.TensorProperties, md._MEM_FORMAT_ENCODING, md.StorageMeta,
               md.MetadataIndex, _StorageInfo]
    with torch.serialization.safe_globals(allowed):
        index = torch.load(io.BytesIO(raw), weights_only=True)
    if not isinstance(index, md.Metadata) or not all(
            isinstance(m, md.TensorStorageMetadata) for m in index.state_dict_metadata.values()):
        raise ValueError("the shards' index names something other than tensors")
    return index


def load_shards(folder: Path, blob: dict, model, opt) -> None:
    """Fill the (sharded) ``model`` and ``opt`` from the shards in ``folder``, as indexed
    by the state file's ``blob``; every rank calls it."""
    from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, load
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    index = read_index(blob["shard_index"])

    class Reader(FileSystemReader):
        """DCP's file reader with the index from the state file, not from ``.metadata``."""

        def read_metadata(self, *args, **kwargs):
            index.storage_meta = StorageMeta(load_id=self.load_id)
            return index

    class TensorsOnly(DefaultLoadPlanner):
        """The default planner, refusing non-tensor entries (it would unpickle them with
        ``weights_only=False``); `read_index` already refused an index that has any."""

        def load_bytes(self, read_item, value):
            raise ValueError(f"{read_item.dest_index.fqn}: not a tensor in the shards")

    msd, osd = get_state_dict(model, opt)
    sd = {"model": msd, "optim": osd["state"]}
    load(sd, storage_reader=Reader(str(folder)), planner=TensorsOnly())
    set_state_dict(model, opt, model_state_dict=sd["model"],
                   optim_state_dict={"state": sd["optim"], "param_groups": blob["param_groups"]})

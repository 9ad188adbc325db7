"""How the fine-tuning loop runs: in one process (`Local`) or as one of several processes
with the model sharded over them (`Sharded`, under torchrun); `for_this_process` picks
one.

The loop (`ckptsweep.train.loop`) is the same either way; everything that differs sits
behind the two classes' common interface:

- ``device``, ``rank``, ``world``, ``is_main`` (the process that logs and writes files);
- ``prepare(model, cfg)``: put the model in place (on the device; or in FSDP2 shards,
  filled from rank 0's weights) and return the function that computes a micro-batch's
  loss: ``step(ids, labels, mask, position_ids, body, weight, n_target)``, scaled by
  ``weight / n_target`` (weight 0: a rank's padding micro-batch, sharded only);
- ``fingerprint(cfg, examples, model)``: what a resume state must have been written for;
- ``reduce(loss, tokens, *flags)``: the per-step agreement (one process: as they are);
- ``save_weights`` / ``has_weights`` / ``load_weights``: where the resume state keeps
  the weights and AdamW moments (`ckptsweep.train.state` writes and reads the rest), with
  ``gather``, ``barrier``, ``cuda_devices``, ``map_location`` and the log wording it uses;
- ``save_model(model, tokenizer, out_dir, files)``: the fine-tuned model, written once;
- ``close()``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ckptsweep.checkpoints.load import save
from ckptsweep.device import resolve_device
from ckptsweep.train import distributed
from ckptsweep.train.loss import completion_loss
from ckptsweep.train.shards import load_shards, read_index, save_shards
from ckptsweep.train.state import fingerprint

SHARDS = "shards-"


def for_this_process(device: str) -> Local | Sharded:
    """`Sharded` when torchrun started this process (even as the only one: the one-GPU
    smoke run of bench/multigpu_smoke.py), else `Local`; ``device``: the config's."""
    return Sharded.start(device) if distributed.launched() else Local(device)


class Local:
    """One process on one device: the model moved there, the resume state's weights and
    AdamW moments in the state file itself."""

    rank, world, is_main = 0, 1, True
    other_runs = "other settings, data or starting weights"

    def __init__(self, device: str):
        self.device = resolve_device(device)
        self.map_location = self.device  # the state file's tensors go straight there

    @property
    def cuda_devices(self):
        import torch

        return range(torch.cuda.device_count()) if torch.cuda.is_available() else ()

    def prepare(self, model, cfg):
        model.to(self.device)

        def step(ids, labels, mask, position_ids, body, weight, n_target):
            # One process never has a padding micro-batch (weight is 1): divided as ever.
            return completion_loss(model, ids, labels, mask, position_ids, body) / n_target

        return step

    def fingerprint(self, cfg, examples, model) -> str:
        return fingerprint(cfg, examples, model)

    def reduce(self, loss, tokens: int, *flags: bool) -> tuple:
        return loss, tokens, *flags

    def gather(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def save_weights(self, path: Path, step: int, model, opt) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict()}

    def has_weights(self, path: Path, blob: dict) -> bool:
        return "model" in blob and "optimizer" in blob

    def load_weights(self, path: Path, blob: dict, model, opt) -> None:
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])

    def resumed_note(self, blob: dict) -> str:
        return ""

    def save_model(self, model, tokenizer, out_dir: Path, files: dict) -> None:
        save(model, tokenizer, out_dir, files)

    def close(self) -> None:
        pass


class Sharded:
    """This process's place in a multi-process fine-tune: the process group (NCCL on GPUs
    plus Gloo for CPU tensors; Gloo alone on CPU, which is how the tests run two processes
    here), this rank's device, the model sharded with FSDP2 (`distributed.shard`), each
    rank computing its share of every optimizer step, and the resume state's weights as
    DCP shards (`ckptsweep.train.shards`). Only rank 0 logs and writes the model."""

    other_runs = "other settings, data, starting weights or one process"
    map_location = "cpu"

    def __init__(self, rank: int, world: int, device: str):
        self.rank, self.world, self.device = rank, world, device
        self.is_main = rank == 0

    @classmethod
    def start(cls, device: str) -> Sharded:
        """Join the process group set up by torchrun (or by a test: RANK, WORLD_SIZE,
        MASTER_ADDR, MASTER_PORT). ``device``: the config's (auto, cpu, cuda)."""
        import torch
        import torch.distributed as dist

        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local)
            name = f"cuda:{local}"
        else:
            name = "cpu"
        if not dist.is_initialized():
            # Gloo serves CPU tensors on a GPU run too (object gathers, state broadcasts).
            dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo",
                                    device_id=torch.device(name) if cuda else None)
        return cls(rank=rank, world=world, device=name)

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    @property
    def cuda_devices(self):
        import torch

        return [torch.cuda.current_device()] if torch.cuda.is_available() else []

    def prepare(self, model, cfg):
        # The model stays where it was loaded (rank 0: host memory; the others: the meta
        # device): `fully_shard` moves each unit's shard to the device itself, so no GPU
        # ever holds the whole model beside its shard, and `fill_from_rank0` fills the rest.
        full = model.state_dict() if self.rank == 0 else {}
        module = distributed.shard(model, completion_loss, cfg.sharding, self.device,
                                   self.world)
        distributed.fill_from_rank0(model, full, self.device)
        del full  # the first rank's full copy: its own shard is all it keeps

        def step(ids, labels, mask, position_ids, body, weight, n_target):
            return module(ids, mask, position_ids, labels=distributed.Labels(labels),
                          body=body) * (weight / n_target)

        return step

    def fingerprint(self, cfg, examples, model) -> str:
        # The first rank's weights are the starting weights (the others may hold none
        # yet). A sharded state is not a one-process one: distinct fingerprints.
        fp = (hashlib.sha256((fingerprint(cfg, examples, model) + "|sharded").encode())
              .hexdigest() if self.rank == 0 else None)
        return self.broadcast(fp)

    def broadcast(self, obj):
        """``obj`` of rank 0, on every rank (a small picklable value)."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (a small picklable value), on every rank."""
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def reduce(self, loss, tokens: int, *flags: bool) -> tuple:
        """(the step's loss summed over the ranks, tokens summed, each flag true on any
        rank): whether to stop, to read the losses back... taken by every rank at the same
        step. The loss's all-reduce is queued behind the step's work on its device (NCCL)
        and the host does not wait; tokens and flags go in one all-reduce of a CPU tensor
        (Gloo, also on GPU runs), so no rank waits for its GPU; float64, so token counts
        stay exact."""
        import torch
        import torch.distributed as dist

        total = loss.detach().to(torch.float64)
        dist.all_reduce(total)
        t = torch.tensor([float(tokens), *map(float, flags)], dtype=torch.float64)
        dist.all_reduce(t)
        return total, int(t[0]), *(bool(x > 0) for x in t[1:].tolist())

    def save_weights(self, path: Path, step: int, model, opt) -> dict:
        """Every rank writes its shard into ``shards-<step>/``, before the state file."""
        return save_shards(Path(path) / f"{SHARDS}{step}", model, opt)

    def has_weights(self, path: Path, blob: dict) -> bool:
        read_index(blob["shard_index"])  # raises unless it indexes tensors only
        return isinstance(blob["param_groups"], list) and (path / blob["shards"]).is_dir()

    def load_weights(self, path: Path, blob: dict, model, opt) -> None:
        load_shards(path / blob["shards"], blob, model, opt)

    def resumed_note(self, blob: dict) -> str:
        return f" ({blob['world']} processes wrote it, {self.world} read it)"

    def save_model(self, model, tokenizer, out_dir: Path, files: dict) -> None:
        """Gathered on rank 0 (every rank takes part), written by it alone."""
        full = distributed.full_state_dict(model)
        if self.rank == 0:
            save(distributed.Gathered(model, full), tokenizer, out_dir, files)
        self.barrier()

"""The loss of a micro-batch (`completion_loss`), the host-to-GPU copy that does not stall
the host (`to_device`), and the losses of the steps, read back from the GPU in batches
and checked for NaN (`LossLog`)."""

from __future__ import annotations

import math

from ckptsweep.train.examples import IGNORE


def completion_loss(model, ids, labels, mask=None, position_ids=None, body=None):
    """Summed next-token cross-entropy over the positions that carry a label.

    The output layer runs only on those positions: with completion-only loss most
    positions are prompt, and the vocabulary projection (50k wide for OLMo) is the largest
    single matrix product of the model, so skipping it for the prompt saves compute and
    the memory of the full logits. Valid for models whose logits are the plain output
    projection of the last hidden state (OLMo, Llama, Pythia; not logit-softcapping ones).
    ``body`` is the transformer without its head (a compiled one, say); packed rows come
    with ``position_ids`` and no ``mask``.
    """
    import torch

    body = body if body is not None else model.base_model
    # Which positions carry a label is read from ``labels`` where they live: kept on the
    # CPU (the training loop does so), the GPU is not stalled mid-step by a mask lookup;
    # and sent before the forward is queued, so the host does not wait for it either.
    targets = labels[:, 1:]
    index = (targets != IGNORE).flatten().nonzero().squeeze(1)
    wanted = to_device(targets.flatten()[index], ids.device)
    index = to_device(index, ids.device)
    # No KV cache in training: it costs memory, and with one transformers would not
    # detect packed rows from the position ids.
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state
    picked = hidden[:, :-1].flatten(0, 1).index_select(0, index)
    logits = model.get_output_embeddings()(picked)
    return torch.nn.functional.cross_entropy(logits.float(), wanted, reduction="sum")


def to_device(tensor, device):
    """``tensor`` (on the CPU) on ``device``, without making the host wait for the GPU.

    A plain copy to a GPU from ordinary memory synchronises: the host waits until the GPU
    has run everything queued before it, so the host can never run ahead and queue the
    next kernels while the GPU computes. From page-locked (pinned) memory the copy is
    queued like a kernel; torch's pinned-memory cache keeps the source alive until the
    copy has run."""
    device = str(device)
    if device.startswith("cuda") and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class LossLog:
    """Every optimizer step's loss, read back from the GPU only when needed.

    Reading a GPU value (``.item()``) makes the host wait for the GPU; read once a step,
    the host could never queue the next step while the GPU finishes this one, and the GPU
    would idle for the host's share of every step. So the losses stay on the device until
    `read` (a progress line, a state save, a stop, the end), which fetches them at once and
    fails on the first non-finite one, naming its step. Nothing is written before a read,
    so a NaN still never reaches a saved model or state; the steps taken after it until
    the read (at most a progress interval) are lost work, not wrong results."""

    def __init__(self, values: list[float]):
        self.values = values
        """Losses read so far, one per optimizer step from the first (the state's list)."""
        self.pending: list = []

    def add(self, loss) -> None:
        self.pending.append(loss.detach())

    def read(self) -> list[float]:
        if self.pending:
            import torch

            fetched = torch.stack([t.double() for t in self.pending]).tolist()
            self.pending.clear()
            for value in fetched:
                if not math.isfinite(value):
                    raise FloatingPointError(f"fine-tuning loss is {value} at step "
                                             f"{len(self.values) + 1}; no model was written")
                self.values.append(value)
        return self.values

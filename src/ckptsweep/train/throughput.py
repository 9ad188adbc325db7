"""What a fine-tune achieved: tokens/s, model FLOPs utilisation (MFU) against the GPU's
dense bf16 peak, and peak memory (``throughput.json`` beside every fine-tuned model)."""

from __future__ import annotations

# Dense bf16 tensor-core peak per GPU, for MFU (first match of the device name wins).
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
              ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


def flop_params(model) -> int:
    """Parameters that cost 6 FLOPs per token in training: all but the input embedding
    table, which is a lookup (unless it is tied to the output head, which is a product).
    Counted for every token, though the head runs on completion tokens only: MFU is a
    model-FLOPs figure, the convention of the PaLM paper."""
    n = sum(p.numel() for p in model.parameters())  # tied tensors are listed once
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return n if emb is head else n - emb.numel()


def peak_flops(device: str) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None when unknown, CPUs included)."""
    import torch

    if not device.startswith("cuda"):
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in PEAK_FLOPS if key in name), None)


def throughput(model, tokens: int, seconds: float, device: str, processes: int = 1) -> dict:
    """Tokens/s, MFU (6 × parameters × non-pad tokens / time / peak) and peak memory (of
    this process). Over ``processes`` GPUs the peak is theirs together."""
    import resource

    import torch

    name, peak = peak_flops(device)
    peak = peak * processes if peak else peak
    achieved = 6 * flop_params(model) * tokens / max(seconds, 1e-9)
    if device.startswith("cuda"):
        memory, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:  # Linux reports the peak resident set in KiB
        memory, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max_rss"
    return {"device": name, "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
            "flop_params": flop_params(model), "tflops_per_s": round(achieved / 1e12, 3),
            "peak_tflops_per_s": peak / 1e12 if peak else None,
            "mfu": round(achieved / peak, 4) if peak else None,
            "peak_memory_gib": round(memory / 2**30, 3), "memory": kind,
            **({"processes": processes} if processes > 1 else {})}

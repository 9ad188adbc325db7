"""Evaluation throughput of the package's model calls, against the hardware and the paper.

On a randomly initialised OLMo (no download), with the functions the workflow runs:

- classification: `ckptsweep.evaluate.logprobs.continuation_logprobs` on ``--cls-len``-token
  prompts with 3 single-token labels each (the shared-prefix fast path: one forward per
  example); examples/s and MFU = 2 × parameters × prompt tokens / time / peak FLOP/s.
- multiple choice: `ckptsweep.evaluate.logprobs.continuation_logprobs` on ``--mc-len``-token
  prompts with ``--mc-choices`` answers of 1 to ``--mc-choice-len`` tokens each, once per
  prefix-sharing mode (``--mc-sharing``; `ckptsweep.evaluate.config.SHARING`): ``sequence``
  re-runs the prompt for every multi-token answer, ``cache`` runs it once and the answers
  on top of its KV cache. Examples/s and MFU (of the tokens the scores need) per mode, the
  speed-up over the first mode and the largest difference between the modes'
  log-likelihoods (float rounding only).
- generation: `ckptsweep.evaluate.logprobs.generate_texts` (greedy, KV cache, stop strings) on
  ``--gen-len``-token prompts with ``--new-tokens`` new tokens; examples/s, new tokens/s
  and memory-bandwidth utilisation = (weight bytes + KV-cache bytes read) per decoding
  step / step time / HBM bandwidth, where the step time excludes a separately timed
  prefill forward.
- the paper's path: transformers' ``generate`` per example (batch size 1, KV cache, same
  dtype) on the first ``--baseline-examples`` of the same prompts; printed with the
  ratio of examples/s.

    PYTHONPATH=src python3 bench/eval_throughput.py --preset tiny      # CPU
    PYTHONPATH=src python3 bench/eval_throughput.py --preset small     # CPU, 59M (real vocab)
    PYTHONPATH=src python3 bench/eval_throughput.py --preset olmo1b    # GPU

Imports: torch, transformers and the package only, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import time

import torch
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from ckptsweep.device import resolve_device
from ckptsweep.evaluate.logprobs import continuation_logprobs, generate_texts

PRESETS = {
    "tiny": {"arch": {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 512,
                      "num_hidden_layers": 2, "num_attention_heads": 4},
             "cls_examples": 128, "cls_batch": [32], "mc_examples": 64, "mc_batch": [16],
             "gen_examples": 32, "gen_batch": [32], "baseline_examples": 4},
    "small": {"arch": {"vocab_size": 50304, "hidden_size": 512, "intermediate_size": 2048,
                       "num_hidden_layers": 8, "num_attention_heads": 8},
              "cls_examples": 32, "cls_batch": [8], "mc_examples": 16, "mc_batch": [8],
              "gen_examples": 8, "gen_batch": [8], "baseline_examples": 2},
    "olmo1b": {"arch": {"vocab_size": 50304, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 16, "num_attention_heads": 16},
               "cls_examples": 2048, "cls_batch": [64, 128], "mc_examples": 1024,
               "mc_batch": [32, 64], "gen_examples": 512,
               "gen_batch": [256, 512], "baseline_examples": 16},
}
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
"""Dense bf16 FLOP/s."""
HBM = (("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12), ("A100", 2.0e12))
"""Memory bandwidth, bytes/s."""
STOPS = ["###", "<|endoftext|>"]
"""The workflow's stop strings (the format's and the separator)."""


def hardware(device: torch.device) -> tuple[str, float | None, float | None]:
    if device.type != "cuda":
        return "cpu", None, None
    name = torch.cuda.get_device_name(device)
    pick = lambda table: next((v for key, v in table if key in name), None)  # noqa: E731
    return name, pick(PEAK_FLOPS), pick(HBM)


def build(arch: dict, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    conf = OlmoConfig(**arch, num_key_value_heads=arch["num_attention_heads"],
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      pad_token_id=1, eos_token_id=0, bos_token_id=None)
    with torch.device(device):  # initialise in place: minutes faster than on CPU for 1B
        return OlmoForCausalLM(conf).to(dtype).eval()


def tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the whole vocabulary (decode and stop strings work)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    # "abcdef": the probe word transformers' stop-string criteria tokenises.
    words = {"<|endoftext|>": 0, "<|padding|>": 1, "###": 2, "abcdef": 3}
    words.update({f"w{i}": i for i in range(4, vocab)})
    tok = Tokenizer(WordLevel(words, unk_token="<|padding|>"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|padding|>")


def prompts(n: int, length: int, vocab: int, seed: int, lo: int | None = None) -> list[list[int]]:
    """``n`` random prompts of ``length`` tokens (``lo``-``length`` if ``lo`` is given)."""
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(rng.randint(lo or length, length))]
            for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[object, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def bench_classification(model, args, batch: int, device, params: int, peak) -> dict:
    vocab = model.config.vocab_size
    ps = prompts(args.cls_examples, args.cls_len, vocab, seed=1, lo=args.cls_min_len)
    labels = [[[5], [6], [7]]] * len(ps)
    continuation_logprobs(model, ps, labels, batch, 1)  # warm-up: every shape once (compile)
    _, secs = timed(lambda: continuation_logprobs(model, ps, labels, batch, 1), device)
    flops = 2 * params * sum(map(len, ps)) / secs
    return {"batch": batch, "examples": len(ps), "seconds": secs,
            "examples_per_s": len(ps) / secs, "mfu": flops / peak if peak else None}


def mc_candidates(n: int, choices: int, max_len: int, vocab: int,
                  seed: int) -> list[list[list[int]]]:
    """Per example, ``choices`` answers of 1 to ``max_len`` random tokens."""
    rng = random.Random(seed)
    return [[[rng.randrange(4, vocab) for _ in range(rng.randint(1, max_len))]
             for _ in range(choices)] for _ in range(n)]


def bench_multiple_choice(model, args, batch: int, device, params: int, peak) -> list[dict]:
    """Multiple-choice scoring, once per prefix-sharing mode, on the same examples. MFU
    counts the work the scores need (2 × parameters × (prompt tokens + answer tokens
    but the last of each)), so it is the same numerator for every mode."""
    vocab = model.config.vocab_size
    ps = prompts(args.mc_examples, args.mc_len, vocab, seed=3, lo=args.mc_min_len)
    cands = mc_candidates(len(ps), args.mc_choices, args.mc_choice_len, vocab, seed=4)
    runs, values = [], {}
    for sharing in args.mc_sharing:
        run = lambda s=sharing: continuation_logprobs(model, ps, cands, batch, 1, s)  # noqa: E731
        run()  # warm-up (and compile)
        values[sharing], secs = timed(run, device)
        needed = sum(map(len, ps)) + sum(len(c) - 1 for cs in cands for c in cs)
        runs.append({"batch": batch, "sharing": sharing, "examples": len(ps), "seconds": secs,
                     "examples_per_s": len(ps) / secs,
                     "mfu": 2 * params * needed / secs / peak if peak else None})
    first = values[args.mc_sharing[0]]
    for r in runs:
        r["max_abs_diff"] = max(abs(a - b)
                                for xs, ys in zip(first, values[r["sharing"]], strict=True)
                                for a, b in zip(xs, ys, strict=True))
        r["speedup"] = r["examples_per_s"] / runs[0]["examples_per_s"]
    return runs


def kv_bytes_per_token(model) -> int:
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * model.dtype.itemsize


def prefill_seconds(model, ps: list[list[int]], batch: int, device) -> float:
    """One timed forward of each batch (the prefill share of generation)."""
    total = 0.0
    for start in range(0, len(ps), batch):
        ids = torch.tensor(ps[start:start + batch], device=device)
        _, secs = timed(lambda ids=ids: model(input_ids=ids, logits_to_keep=1), device)
        total += secs
    return total


def bench_generation(model, tok, args, batch: int, device, weight_bytes: int, bw) -> dict:
    ps = prompts(args.gen_examples, args.gen_len, model.config.vocab_size, seed=2)
    gen = lambda: generate_texts(model, tok, ps, args.new_tokens, STOPS, batch, 1,  # noqa: E731
                                 cache_implementation=args.cache_implementation)
    generate_texts(model, tok, ps[:batch], args.new_tokens, STOPS, batch, 1,
                   cache_implementation=args.cache_implementation)  # warm-up (and compile)
    _, secs = timed(gen, device)
    with torch.inference_mode():
        prefill = prefill_seconds(model, ps, batch, device)
    steps = args.new_tokens * -(-len(ps) // batch)
    step_s = max(secs - prefill, 1e-9) / steps
    mean_len = args.gen_len + (args.new_tokens + 1) / 2
    step_bytes = weight_bytes + kv_bytes_per_token(model) * min(batch, len(ps)) * mean_len
    return {"batch": batch, "examples": len(ps), "seconds": secs, "prefill_s": prefill,
            "examples_per_s": len(ps) / secs,
            "new_tokens_per_s": len(ps) * args.new_tokens / secs,
            "decode_step_ms": step_s * 1e3,
            "bandwidth_util": step_bytes / step_s / bw if bw else None}


def bench_baseline(model, args, device) -> dict:
    """The paper's path: ``generate`` per example, batch size 1, KV cache on."""
    ps = prompts(args.gen_examples, args.gen_len, model.config.vocab_size, seed=2)
    ps = ps[:args.baseline_examples]
    kw = {"max_new_tokens": args.new_tokens, "do_sample": False, "use_cache": True,
          "eos_token_id": 0, "pad_token_id": 1}
    model.generate(torch.tensor([ps[0]], device=device), **kw)  # warm-up
    new = 0
    sync(device)
    t0 = time.perf_counter()
    for p in ps:
        ids = torch.tensor([p], device=device)
        new += model.generate(ids, attention_mask=torch.ones_like(ids), **kw).shape[1] - len(p)
    sync(device)
    secs = time.perf_counter() - t0
    return {"examples": len(ps), "seconds": secs, "examples_per_s": len(ps) / secs,
            "new_tokens_per_s": new / secs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="default: bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--cls-len", type=int, default=256)
    p.add_argument("--cls-min-len", type=int, help="random prompt lengths from this to "
                   "--cls-len (padded batches, as in the workflow); default: all --cls-len")
    p.add_argument("--cls-examples", type=int)
    p.add_argument("--cls-batch", type=int, nargs="+")
    p.add_argument("--compile", action="store_true",
                   help="also time classification and multiple choice with "
                   "torch.compile(model)")
    p.add_argument("--mc-len", type=int, default=256)
    p.add_argument("--mc-min-len", type=int, help="random prompt lengths from this to "
                   "--mc-len; default: all --mc-len")
    p.add_argument("--mc-choices", type=int, default=4)
    p.add_argument("--mc-choice-len", type=int, default=16,
                   help="answers of 1 to this many tokens")
    p.add_argument("--mc-examples", type=int)
    p.add_argument("--mc-batch", type=int, nargs="+")
    p.add_argument("--mc-sharing", nargs="+", default=["sequence", "cache"],
                   help="prefix-sharing modes to time, the first one the reference")
    p.add_argument("--gen-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=60)
    p.add_argument("--gen-examples", type=int)
    p.add_argument("--gen-batch", type=int, nargs="+")
    p.add_argument("--cache-implementation", help="generate's cache, e.g. static")
    p.add_argument("--baseline-examples", type=int)
    p.add_argument("--skip", nargs="*", default=[], choices=["cls", "mc", "gen", "baseline"])
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    preset = PRESETS[args.preset]
    for key in ("cls_examples", "cls_batch", "mc_examples", "mc_batch", "gen_examples",
                "gen_batch", "baseline_examples"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    device = torch.device(resolve_device(args.device))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    model = build(preset["arch"], device, dtype)
    tok = tokenizer(model.config.vocab_size)
    name, peak, bw = hardware(device)
    params = sum(q.numel() for q in model.parameters())  # the tied head counted once
    weight_bytes = sum(q.numel() * q.element_size() for q in model.parameters())
    result = {"preset": args.preset, "device": name, "dtype": str(dtype), "params": params,
              "torch": torch.__version__, "classification": [], "multiple_choice": [],
              "generation": []}
    print(f"{name}, {dtype}, {params / 1e6:.1f}M parameters, attention "
          f"{model.config._attn_implementation}", flush=True)

    with torch.inference_mode():
        runs = [("eager", model)] + [("compiled", torch.compile(model))] * args.compile
        if "cls" not in args.skip:
            for label, m in runs:
                for batch in args.cls_batch:
                    r = {"mode": label, **bench_classification(m, args, batch, device, params,
                                                                 peak)}
                    result["classification"].append(r)
                    print(f"classification {label} batch {batch}: {r['examples_per_s']:.1f} "
                          f"examples/s, MFU {fmt(r['mfu'])}", flush=True)
        if "mc" not in args.skip:
            for (label, m), batch in itertools.product(runs, args.mc_batch):
                for r in bench_multiple_choice(m, args, batch, device, params, peak):
                    r = {"mode": label, **r}
                    result["multiple_choice"].append(r)
                    print(f"multiple choice {label} {r['sharing']} batch {batch}: "
                          f"{r['examples_per_s']:.1f} examples/s ({r['speedup']:.2f}x), "
                          f"MFU {fmt(r['mfu'])}, max |diff| {r['max_abs_diff']:.1e}",
                          flush=True)
        if "gen" not in args.skip:
            for batch in args.gen_batch:
                r = bench_generation(model, tok, args, batch, device, weight_bytes, bw)
                result["generation"].append(r)
                print(f"generation batch {batch}: {r['examples_per_s']:.2f} examples/s, "
                      f"{r['new_tokens_per_s']:.0f} new tokens/s, step "
                      f"{r['decode_step_ms']:.1f} ms, bandwidth {fmt(r['bandwidth_util'])}",
                      flush=True)
    if "baseline" not in args.skip:
        base = result["baseline"] = bench_baseline(model, args, device)
        print(f"paper's path (generate, batch 1): {base['examples_per_s']:.3f} examples/s, "
              f"{base['new_tokens_per_s']:.0f} new tokens/s", flush=True)
        if result["generation"]:
            best = max(r["examples_per_s"] for r in result["generation"])
            result["speedup"] = best / base["examples_per_s"]
            print(f"generation speed-up over the paper's path: {result['speedup']:.1f}x")
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


if __name__ == "__main__":
    main()

"""Evaluation throughput of the package's model calls, against the hardware and the paper.

On a randomly initialised OLMo (no download), with the functions the workflow runs, once
per batch policy (``--*-batch``: a number of sequences per forward, ``auto``, the token
budget `ckptsweep.evaluate.batching` picks for the device, or ``auto=N``, a budget of N
tokens, for sweeps); each line gives examples/s, the fraction of the forwards' input
tokens that are padding, and what auto chose:

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

``--long F`` makes a fraction F of every prompt set 1,800-2,048 tokens long (mixed with
the short ones: the case where a fixed number of rows either wastes a GPU on the short
prompts or runs out of memory on the long ones).

    PYTHONPATH=src python3 bench/eval_throughput.py --preset tiny      # CPU, 1.3M
    PYTHONPATH=src python3 bench/eval_throughput.py --preset m34       # CPU, 34M
    PYTHONPATH=src python3 bench/eval_throughput.py --preset small     # CPU, 59M (real vocab)
    PYTHONPATH=src python3 bench/eval_throughput.py --preset olmo1b    # GPU
    PYTHONPATH=src python3 bench/eval_throughput.py --preset olmo1b --long 0.2 \
        --skip cls baseline --mc-batch 32 auto --gen-batch 64 auto      # GPU, long prompts

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
from ckptsweep.evaluate.batching import AUTO, Batching
from ckptsweep.evaluate.logprobs import continuation_logprobs, generate_texts

POLICIES = ["8", "16", "32", "50", AUTO]
"""Batch policies a CPU preset compares: fixed rows (today's configs use 8 to 50), auto."""
TWO_SHOT = {"mc_min_len": 64, "mc_len": 256, "mc_choice_len": 8, "gen_min_len": 64,
            "gen_len": 256, "new_tokens": 40}
"""Prompt shapes of the CPU presets: 2-shot-like prompts of 64-256 tokens, answers of 1-8
tokens, 40 new tokens (the demo study's generation length)."""
PRESETS = {
    "tiny": {"arch": {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 512,
                      "num_hidden_layers": 2, "num_attention_heads": 4},
             "cls_examples": 128, "cls_batch": ["32", AUTO], "mc_examples": 300,
             "mc_batch": POLICIES, "gen_examples": 60, "gen_batch": POLICIES,
             "baseline_examples": 4, "mc_sharing": [AUTO], "shape": TWO_SHOT},
    # The shape of a ~34M OLMo (hidden 512, 8 layers) with the demo's 2,048-token vocabulary.
    "m34": {"arch": {"vocab_size": 2048, "hidden_size": 512, "intermediate_size": 2048,
                     "num_hidden_layers": 8, "num_attention_heads": 8},
            "cls_examples": 32, "cls_batch": [AUTO], "mc_examples": 300, "mc_batch": POLICIES,
            "gen_examples": 60, "gen_batch": POLICIES, "baseline_examples": 2,
            "mc_sharing": [AUTO], "shape": TWO_SHOT},
    "small": {"arch": {"vocab_size": 50304, "hidden_size": 512, "intermediate_size": 2048,
                       "num_hidden_layers": 8, "num_attention_heads": 8},
              "cls_examples": 32, "cls_batch": ["8"], "mc_examples": 16, "mc_batch": ["8"],
              "gen_examples": 8, "gen_batch": ["8"], "baseline_examples": 2,
              "mc_sharing": ["sequence", "cache"], "shape": {}},
    # Short on purpose: bench/gpu_suite.sh gives this whole run 70 s on one GPU.
    "olmo1b": {"arch": {"vocab_size": 50304, "hidden_size": 2048, "intermediate_size": 8192,
                        "num_hidden_layers": 16, "num_attention_heads": 16},
               "cls_examples": 2048, "cls_batch": ["128", AUTO], "mc_examples": 1024,
               "mc_batch": ["64", AUTO], "gen_examples": 512, "gen_batch": ["256", AUTO],
               "baseline_examples": 16, "mc_sharing": ["sequence", "cache"], "shape": {}},
}
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
"""Dense bf16 FLOP/s."""
HBM = (("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12), ("A100", 2.0e12))
"""Memory bandwidth, bytes/s."""
STOPS = ["###", "<|endoftext|>"]
"""The workflow's stop strings (the format's and the separator)."""
LONG = (1800, 2048)
"""Lengths of ``--long``'s long prompts."""


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


def prompts(n: int, length: int, vocab: int, seed: int, lo: int | None = None,
            long: float = 0.0) -> list[list[int]]:
    """``n`` random prompts of ``length`` tokens (``lo``-``length`` if ``lo`` is given), a
    fraction ``long`` of them `LONG` instead."""
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(
        rng.randint(*LONG) if rng.random() < long else rng.randint(lo or length, length))]
            for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall time, or this process's CPU time (on a shared CPU with one thread it
counts only the time the benchmark ran: the same numbers however loaded the machine)."""
clock = time.perf_counter


def timed(fn, device: torch.device) -> tuple[object, float]:
    sync(device)
    t0 = clock()
    out = fn()
    sync(device)
    return out, clock() - t0


def policy(text: str) -> Batching:
    """A fresh `Batching` for a policy name: rows, ``auto`` or ``auto=N`` (N tokens)."""
    if text.startswith(f"{AUTO}="):
        return Batching(AUTO, budget=int(text.split("=", 1)[1]))
    return Batching(text if text == AUTO else int(text))


class Padding:
    """Counts the decoder's input positions and the padded ones among them (the new
    columns of each forward's attention mask), over the forwards of a ``with`` block."""

    def __init__(self, model):
        self.model, self.real, self.total, self.forwards = model, 0, 0, 0

    def __enter__(self):
        def count(module, args, kwargs):
            ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
            if ids is None:
                return
            self.forwards += 1
            self.total += ids.numel()
            self.real += ids.numel() if mask is None else int(mask[:, -ids.shape[1]:].sum())

        self.hook = self.model.model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.hook.remove()

    @property
    def fraction(self) -> float:
        return 1 - self.real / max(self.total, 1)


def warm_examples(args, n: int) -> int:
    """Examples of the warm-up run: all of them to compile every shape, else a few."""
    return n if args.compile else min(n, 32)


def run_policy(model, name: str, fn, device, warm: int, repeats: int) -> tuple[object, float, dict]:
    """``fn(batching)`` timed with a fresh `Batching` of policy ``name``, after a warm-up
    on the first ``warm`` examples (``fn(batching, warm)``), the best of ``--repeats``
    runs; with its padded fraction, its forwards and the budgets auto chose."""
    fn(policy(name), warm)  # warm-up (and compile)
    secs = float("inf")
    for _ in range(repeats):  # the best of them: the machine may be shared
        batching = policy(name)
        with Padding(getattr(model, "_orig_mod", model)) as pad:
            out, t = timed(lambda b=batching: fn(b, None), device)
        secs = min(secs, t)
    return out, secs, {"policy": name, "padded": pad.fraction, "forwards": pad.forwards,
                       "auto_tokens": dict(batching.chosen) or None,
                       "oom_splits": batching.splits}


def bench_classification(model, args, name: str, device, params: int, peak) -> dict:
    vocab = model.config.vocab_size
    ps = prompts(args.cls_examples, args.cls_len, vocab, seed=1, lo=args.cls_min_len,
                 long=args.long)
    labels = [[[5], [6], [7]]] * len(ps)
    fn = lambda b, n: continuation_logprobs(model, ps[:n], labels[:n], b, 1)  # noqa: E731
    _, secs, info = run_policy(model, name, fn, device, warm_examples(args, len(ps)), args.repeats)
    flops = 2 * params * sum(map(len, ps)) / secs
    return {**info, "examples": len(ps), "seconds": secs,
            "examples_per_s": len(ps) / secs, "mfu": flops / peak if peak else None}


def mc_candidates(n: int, choices: int, max_len: int, vocab: int,
                  seed: int) -> list[list[list[int]]]:
    """Per example, ``choices`` answers of 1 to ``max_len`` random tokens."""
    rng = random.Random(seed)
    return [[[rng.randrange(4, vocab) for _ in range(rng.randint(1, max_len))]
             for _ in range(choices)] for _ in range(n)]


def bench_multiple_choice(model, args, name: str, device, params: int, peak) -> list[dict]:
    """Multiple-choice scoring, once per prefix-sharing mode, on the same examples. MFU
    counts the work the scores need (2 × parameters × (prompt tokens + answer tokens
    but the last of each)), so it is the same numerator for every mode."""
    vocab = model.config.vocab_size
    ps = prompts(args.mc_examples, args.mc_len, vocab, seed=3, lo=args.mc_min_len,
                 long=args.long)
    cands = mc_candidates(len(ps), args.mc_choices, args.mc_choice_len, vocab, seed=4)
    runs, values = [], {}
    for sharing in args.mc_sharing:
        fn = lambda b, n, s=sharing: continuation_logprobs(  # noqa: E731
            model, ps[:n], cands[:n], b, 1, s)
        values[sharing], secs, info = run_policy(model, name, fn, device,
                                                 warm_examples(args, len(ps)),
                                                 args.repeats)
        needed = sum(map(len, ps)) + sum(len(c) - 1 for cs in cands for c in cs)
        runs.append({**info, "sharing": sharing, "examples": len(ps), "seconds": secs,
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


def prefill_seconds(model, ps: list[list[int]], sizes: list[int], device) -> float:
    """One timed forward of each batch (the prefill share of generation): ``sizes`` rows
    each, of the prompts longest first, left-padded as generation pads them."""
    total, order, at = 0.0, sorted(ps, key=len, reverse=True), 0
    for n in sizes:
        batch = order[at:at + n]
        at += n
        ids = torch.tensor([[1] * (len(batch[0]) - len(p)) + p for p in batch], device=device)
        _, secs = timed(lambda ids=ids: model(input_ids=ids, logits_to_keep=1), device)
        total += secs
    return total


def bench_generation(model, tok, args, name: str, device, weight_bytes: int, bw) -> dict:
    ps = prompts(args.gen_examples, args.gen_len, model.config.vocab_size, seed=2,
                 lo=args.gen_min_len, long=args.long)
    sizes = []

    def fn(batching, n):
        if n is None:  # a timed run: record its batches' rows
            sizes.clear()
            hook = model.model.register_forward_pre_hook(
                lambda m, a, kw: sizes.append(kw["input_ids"].shape[0])
                if kw["input_ids"].shape[1] > 1 else None, with_kwargs=True)
        try:
            return generate_texts(model, tok, ps if n is None else ps[:n], args.new_tokens,
                                  STOPS, batching, 1,
                                  cache_implementation=args.cache_implementation)
        finally:
            if n is None:
                hook.remove()

    _, secs, info = run_policy(model, name, fn, device, 8, args.repeats)
    with torch.inference_mode():
        prefill = prefill_seconds(model, ps, sizes, device)
    steps = args.new_tokens * len(sizes)
    step_s = max(secs - prefill, 1e-9) / steps
    mean_len = sum(map(len, ps)) / len(ps) + (args.new_tokens + 1) / 2
    step_bytes = weight_bytes + kv_bytes_per_token(model) * len(ps) / len(sizes) * mean_len
    return {**info, "examples": len(ps), "seconds": secs, "prefill_s": prefill,
            "rows_per_call": len(ps) / len(sizes), "examples_per_s": len(ps) / secs,
            "new_tokens_per_s": len(ps) * args.new_tokens / secs,
            "decode_step_ms": step_s * 1e3,
            "bandwidth_util": step_bytes / step_s / bw if bw else None}


def bench_baseline(model, args, device) -> dict:
    """The paper's path: ``generate`` per example, batch size 1, KV cache on."""
    ps = prompts(args.gen_examples, args.gen_len, model.config.vocab_size, seed=2,
                 lo=args.gen_min_len, long=args.long)
    ps = ps[:args.baseline_examples]
    kw = {"max_new_tokens": args.new_tokens, "do_sample": False, "use_cache": True,
          "eos_token_id": 0, "pad_token_id": 1}
    model.generate(torch.tensor([ps[0]], device=device), **kw)  # warm-up
    new = 0
    sync(device)
    t0 = clock()
    for p in ps:
        ids = torch.tensor([p], device=device)
        new += model.generate(ids, attention_mask=torch.ones_like(ids), **kw).shape[1] - len(p)
    sync(device)
    secs = clock() - t0
    return {"examples": len(ps), "seconds": secs, "examples_per_s": len(ps) / secs,
            "new_tokens_per_s": new / secs}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="default: bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=CLOCKS, default="wall",
                   help="cpu: this process's CPU time (a shared CPU, with --threads 1)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per policy, the "
                   "fastest kept (a shared machine's noise)")
    p.add_argument("--long", type=float, default=0.0,
                   help="fraction of every prompt set made 1,800-2,048 tokens long")
    p.add_argument("--cls-len", type=int, default=256)
    p.add_argument("--cls-min-len", type=int, help="random prompt lengths from this to "
                   "--cls-len (padded batches, as in the workflow); default: all --cls-len")
    p.add_argument("--cls-examples", type=int)
    p.add_argument("--cls-batch", nargs="+", help="policies: rows, auto or auto=TOKENS")
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
    p.add_argument("--mc-batch", nargs="+", help="policies: rows, auto or auto=TOKENS")
    p.add_argument("--mc-sharing", nargs="+", help="prefix-sharing modes to time, the "
                   "first one the reference (default: the preset's)")
    p.add_argument("--gen-len", type=int, default=512)
    p.add_argument("--gen-min-len", type=int, help="random prompt lengths from this to "
                   "--gen-len; default: all --gen-len")
    p.add_argument("--new-tokens", type=int, default=60)
    p.add_argument("--gen-examples", type=int)
    p.add_argument("--gen-batch", nargs="+", help="policies: rows, auto or auto=TOKENS")
    p.add_argument("--cache-implementation", help="generate's cache, e.g. static")
    p.add_argument("--baseline-examples", type=int)
    p.add_argument("--skip", nargs="*", default=[], choices=["cls", "mc", "gen", "baseline"])
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    preset = PRESETS[args.preset]
    for key in ("cls_examples", "cls_batch", "mc_examples", "mc_batch", "gen_examples",
                "gen_batch", "baseline_examples", "mc_sharing"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    for key, value in preset["shape"].items():  # the preset's shape, unless given
        if getattr(args, key) == p.get_default(key):
            setattr(args, key, value)
    return args


def main() -> None:
    global clock
    args = parse_args()
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    model = build(PRESETS[args.preset]["arch"], device, dtype)
    tok = tokenizer(model.config.vocab_size)
    name, peak, bw = hardware(device)
    params = sum(q.numel() for q in model.parameters())  # the tied head counted once
    weight_bytes = sum(q.numel() * q.element_size() for q in model.parameters())
    result = {"preset": args.preset, "device": name, "dtype": str(dtype), "params": params,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "clock": args.clock,
              "long": args.long, "classification": [], "multiple_choice": [],
              "generation": []}
    print(f"{name}, {dtype}, {params / 1e6:.1f}M parameters, attention "
          f"{model.config._attn_implementation}, {torch.get_num_threads()} threads",
          flush=True)

    with torch.inference_mode():
        runs = [("eager", model)] + [("compiled", torch.compile(model))] * args.compile
        if "cls" not in args.skip:
            for (label, m), batch in itertools.product(runs, args.cls_batch):
                r = {"mode": label, **bench_classification(m, args, batch, device, params,
                                                             peak)}
                result["classification"].append(r)
                print(f"classification {label} batch {batch}: {r['examples_per_s']:.1f} "
                      f"examples/s, padded {r['padded']:.1%}, MFU {fmt(r['mfu'])}"
                      f"{chose(r)}", flush=True)
        if "mc" not in args.skip:
            for (label, m), batch in itertools.product(runs, args.mc_batch):
                for r in bench_multiple_choice(m, args, batch, device, params, peak):
                    r = {"mode": label, **r}
                    result["multiple_choice"].append(r)
                    print(f"multiple choice {label} {r['sharing']} batch {batch}: "
                          f"{r['examples_per_s']:.1f} examples/s ({r['speedup']:.2f}x), "
                          f"padded {r['padded']:.1%}, {r['forwards']} forwards, MFU "
                          f"{fmt(r['mfu'])}, max |diff| {r['max_abs_diff']:.1e}{chose(r)}",
                          flush=True)
        if "gen" not in args.skip:
            for batch in args.gen_batch:
                r = bench_generation(model, tok, args, batch, device, weight_bytes, bw)
                result["generation"].append(r)
                print(f"generation batch {batch}: {r['examples_per_s']:.2f} examples/s, "
                      f"padded {r['padded']:.1%}, {r['rows_per_call']:.1f} rows per call, "
                      f"{r['new_tokens_per_s']:.0f} new tokens/s, step "
                      f"{r['decode_step_ms']:.1f} ms, bandwidth {fmt(r['bandwidth_util'])}"
                      f"{chose(r)}", flush=True)
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


def chose(r: dict) -> str:
    """What auto chose (tokens per forward, per kind of call) and any out-of-memory split."""
    text = ""
    if r["auto_tokens"] and r["policy"] == AUTO:
        text += ", auto chose " + ", ".join(f"{k} {v} tokens" for k, v in r["auto_tokens"].items())
    if r["oom_splits"]:
        text += f", {r['oom_splits']} out-of-memory split(s)"
    return text


if __name__ == "__main__":
    main()

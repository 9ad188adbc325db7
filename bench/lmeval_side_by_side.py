"""ckptsweep's evaluation against lm-evaluation-harness (``hf`` backend), side by side on
one machine: the same weights, the same rendered prompts, the same examples, float32,
``--threads`` threads each, every measurement a fresh process.

Two timings per run: the **whole process** (start to exit: imports, loading the model,
tokenising, scoring; measured by this script around the child) and the **evaluation
itself** (the scoring call only: ckptsweep's `continuation_logprobs` / `generate_texts`,
lm-eval's ``HFLM.loglikelihood`` / ``generate_until``). The results must agree: the
largest log-likelihood difference and the number of differing generated texts are
printed.

The model is bench/eval_throughput.py's randomly initialised OLMo (``--preset tiny``, the
demo's shape, or ``m34``, a 34M one) with its word-level tokenizer, saved once; prompts
are its random 2-shot-like prompts rendered as text (64-256 words; multiple choice: 4
answers of 1-8 words; generation: 40 new tokens, the demo's stop strings).

lm-eval is not one of ckptsweep's dependencies: install it in a separate environment
(with the same torch and transformers) and name that environment's Python::

    python -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install torch==2.13.0 \
        transformers==5.24.0 lm-eval==0.4.13
    PYTHONPATH=src python bench/lmeval_side_by_side.py --preset m34 \
        --lmeval-python /tmp/lmeval/bin/python --lmeval-cli 16

``--lmeval-cli`` also times lm-eval's own command line (``lm_eval run`` over a custom task
of the same examples): the whole process only, its texts or log-likelihoods compared with
ckptsweep's.

CPU only (the GPU suite has its own benches); imports torch, transformers and the package.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MC_CHOICES, MC_EXAMPLES, GEN_EXAMPLES, NEW_TOKENS = 4, 300, 60, 40
"""The issue's cells: 300 two-shot multiple-choice examples, 60 summaries of 40 tokens."""


def prepare(folder: Path, preset: str) -> None:
    """Save the preset's model, tokenizer and examples (as text) under ``folder``."""
    import random

    import torch

    sys.path.insert(0, str(HERE))
    from eval_throughput import PRESETS, STOPS, build, prompts, tokenizer

    p = PRESETS[preset]
    vocab, shape = p["arch"]["vocab_size"], p["shape"]
    build(p["arch"], torch.device("cpu"), torch.float32).save_pretrained(folder)
    tokenizer(vocab).save_pretrained(folder)
    text = lambda ids: " ".join(f"w{i}" for i in ids)  # noqa: E731
    rng = random.Random(1)
    mc = [{"prompt": text(ids),
           "choices": [text([rng.randrange(4, vocab) for _ in range(
               rng.randint(1, shape["mc_choice_len"]))]) for _ in range(MC_CHOICES)]}
          for ids in prompts(MC_EXAMPLES, shape["mc_len"], vocab, 0, shape["mc_min_len"])]
    gen = [text(ids) for ids in prompts(GEN_EXAMPLES, shape["gen_len"], vocab, 1,
                                        shape["gen_min_len"])]
    (folder / "examples.json").write_text(json.dumps({"mc": mc, "gen": gen, "stops": STOPS}))


def run_ours(folder: Path, task: str, batch: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ckptsweep.evaluate.batching import AUTO, Batching
    from ckptsweep.evaluate.logprobs import continuation_logprobs, generate_texts

    ex = json.loads((folder / "examples.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    batching = (Batching(AUTO, budget=int(batch.split("=", 1)[1])) if batch.startswith("auto=")
                else Batching(batch if batch == AUTO else int(batch)))  # auto=N: N tokens
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    t0 = time.perf_counter()
    if task == "mc":
        result = continuation_logprobs(
            model, [enc(e["prompt"]) for e in ex["mc"]],
            [[enc(" " + c) for c in e["choices"]] for e in ex["mc"]], batching,
            tok.pad_token_id)
    else:
        result = generate_texts(model, tok, [enc(p) for p in ex["gen"]], NEW_TOKENS,
                                ex["stops"], batching, tok.pad_token_id)
    seconds = time.perf_counter() - t0
    chose = dict(batching.chosen) or None
    out.write_text(json.dumps({"eval_s": seconds, "result": result, "auto_budget": chose}))


def run_lmeval(folder: Path, task: str, batch: str, out: Path) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    ex = json.loads((folder / "examples.json").read_text())
    lm = HFLM(pretrained=str(folder), device="cpu", dtype="float32",
              batch_size=int(batch), max_length=4096)
    t0 = time.perf_counter()
    if task == "mc":
        reqs = [Instance("loglikelihood", {}, (e["prompt"], " " + c), i)
                for i, e in enumerate(ex["mc"]) for c in e["choices"]]
        flat = [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
        result = [flat[i:i + MC_CHOICES] for i in range(0, len(flat), MC_CHOICES)]
    else:
        reqs = [Instance("generate_until", {}, (p, {"until": ex["stops"],
                                                     "max_gen_toks": NEW_TOKENS,
                                                     "do_sample": False}), i)
                for i, p in enumerate(ex["gen"])]
        result = [t.strip() for t in lm.generate_until(reqs, disable_tqdm=True)]
    seconds = time.perf_counter() - t0
    out.write_text(json.dumps({"eval_s": seconds, "result": result}))


def cli_task(folder: Path, task: str) -> str:
    """A custom lm-eval task over the same examples (its ``--include_path`` folder), for
    its command line; the task's name."""
    import yaml

    ex = json.loads((folder / "examples.json").read_text())
    tasks = folder / "lmeval_tasks"
    tasks.mkdir(exist_ok=True)
    name = f"ckptsweep_bench_{task}"
    rows = ex["mc"] if task == "mc" else [{"prompt": p} for p in ex["gen"]]
    data = tasks / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
            "doc_to_text": "{{prompt}}"}
    if task == "mc":  # the context, then " " + each choice, as run_lmeval's requests
        spec |= {"output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
                 "doc_to_target": 0, "metric_list": [{"metric": "acc"}]}
    else:
        spec |= {"output_type": "generate_until", "doc_to_target": "",
                 "generation_kwargs": {"until": ex["stops"], "max_gen_toks": NEW_TOKENS,
                                       "do_sample": False},
                 "metric_list": [{"metric": "exact_match"}]}
    (tasks / f"{task}.yaml").write_text(yaml.safe_dump(spec))
    return name


def measure_cli(python: str, folder: Path, task: str, batch: str, threads: int,
                out: Path) -> dict:
    """lm-eval's own command line (``lm_eval run``: its task registry, its data loading),
    the way its users run it; the whole process only."""
    import shutil

    name = cli_task(folder, task)
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [str(Path(python).parent / "lm_eval"), "run", "--model", "hf", "--model_args",
           f"pretrained={folder},dtype=float32,max_length=4096", "--device", "cpu",
           "--batch_size", batch, "--tasks", name, "--include_path",
           str(folder / "lmeval_tasks"), "--output_path", str(out), "--log_samples"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    total = time.perf_counter() - t0
    samples = sorted((json.loads(line) for f in out.rglob(f"samples_{name}_*.jsonl")
                      for line in f.read_text().splitlines()), key=lambda r: r["doc_id"])
    if task == "mc":
        result = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    else:
        result = [s["filtered_resps"][0].strip() for s in samples]
    return {"eval_s": float("nan"), "total_s": total, "result": result}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    run = run_ours if args.tool == "ours" else run_lmeval
    run(Path(args.folder), args.task, args.batch, Path(args.out))


def measure(python: str, folder: Path, tool: str, task: str, batch: str, threads: int,
            out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "OMP_NUM_THREADS":
           str(threads), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run([python, __file__, "child", "--tool", tool, "--task", task, "--batch",
                    batch, "--threads", str(threads), "--folder", str(folder), "--out",
                    str(out)], env=env, check=True)
    total = time.perf_counter() - t0
    return {**json.loads(out.read_text()), "total_s": total}


def agreement(task: str, a: list, b: list) -> str:
    if task == "mc":
        diff = max(abs(x - y) for ra, rb in zip(a, b, strict=True)
                   for x, y in zip(ra, rb, strict=True))
        return f"max |log-likelihood difference| {diff:.1e}"
    return f"{sum(x != y for x, y in zip(a, b, strict=True))} of {len(a)} texts differ"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("child")
    for key in ("tool", "task", "batch", "folder", "out"):
        c.add_argument(f"--{key}", required=True)
    c.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="tiny", choices=["tiny", "m34"])
    p.add_argument("--tasks", nargs="+", default=["mc", "gen"])
    p.add_argument("--ours", nargs="+", default=["auto"], help="ckptsweep's batch policies")
    p.add_argument("--lmeval", nargs="+", default=["8", "16", "32", "50"],
                   help="lm-eval's fixed batch sizes (its best is the yardstick)")
    p.add_argument("--lmeval-cli", nargs="*", default=[], metavar="BATCH",
                   help="also time lm-eval's command line at these fixed batch sizes (its "
                   "task registry and data loading included): the whole process only")
    p.add_argument("--runs", type=int, default=3, help="runs per cell (the median is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lmeval-python", required=False, help="the Python that has lm_eval")
    p.add_argument("--work", default="/tmp/ckptsweep-lmeval", help="model and outputs")
    args = p.parse_args()
    if args.cmd == "child":
        return child(args)
    if not args.lmeval_python:
        p.error("--lmeval-python: the Python of an environment with lm-eval installed")
    work = Path(args.work) / args.preset
    if not (work / "examples.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        prepare(work, args.preset)
    print(f"preset {args.preset}, {args.threads} threads, float32, median of {args.runs} runs")
    for task in args.tasks:
        cells = {}
        for tool, python, policies in (("ours", sys.executable, args.ours),
                                       ("lm-eval", args.lmeval_python, args.lmeval)):
            for batch in policies:
                runs = [measure(python, work, "ours" if tool == "ours" else "lmeval", task,
                                batch, args.threads, work / f"{tool}-{task}-{batch}.json")
                        for _ in range(args.runs)]
                cells[(tool, batch)] = {
                    "eval_s": statistics.median(r["eval_s"] for r in runs),
                    "total_s": statistics.median(r["total_s"] for r in runs),
                    "result": runs[0]["result"], "auto_budget": runs[0].get("auto_budget")}
                c = cells[(tool, batch)]
                print(f"  {task:3s} {tool:7s} batch {batch:>4s}: evaluation {c['eval_s']:7.2f} s,"
                      f" whole process {c['total_s']:7.2f} s"
                      + (f" (auto chose {c['auto_budget']} tokens)" if c["auto_budget"] else ""),
                      flush=True)
        for batch in args.lmeval_cli:
            runs = [measure_cli(args.lmeval_python, work, task, batch, args.threads,
                                work / f"cli-{task}-{batch}") for _ in range(args.runs)]
            total = statistics.median(r["total_s"] for r in runs)
            ours = min(c["total_s"] for (tool, _), c in cells.items() if tool == "ours")
            print(f"  {task:3s} lm-eval command line, batch {batch:>4s}: whole process "
                  f"{total:7.2f} s; ckptsweep's best over it: {total / ours:.2f}x; "
                  + agreement(task, runs[0]["result"], cells[("ours", args.ours[0])]["result"]),
                  flush=True)
        lm_best = min((c for (tool, _), c in cells.items() if tool == "lm-eval"),
                      key=lambda c: c["eval_s"])
        lm_best_total = min(c["total_s"] for (tool, _), c in cells.items() if tool == "lm-eval")
        for (tool, batch), c in cells.items():
            if tool == "ours":
                print(f"  {task}: ckptsweep {batch} over lm-eval's best fixed batch: evaluation "
                      f"{lm_best['eval_s'] / c['eval_s']:.2f}x, whole process "
                      f"{lm_best_total / c['total_s']:.2f}x; "
                      + agreement(task, c["result"], lm_best["result"]), flush=True)


if __name__ == "__main__":
    main()

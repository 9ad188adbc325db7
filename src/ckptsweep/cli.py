"""`ckptsweep <verb>`: the one command-line entry point that the workflow's rules call.

Each verb takes the config block it needs as one JSON argument (``--spec``), so Snakemake
re-runs a job exactly when its part of the config changes, and no config value is ever
spliced into a shell command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ckptsweep.errors import ConfigError, build
from ckptsweep.progress import log

# Keep job logs clean and make sure no compute job reaches for a hub (the prefetch verbs,
# run by local rules on the submitting node, are the exception: see `_online`).
_USER_OFFLINE = os.environ.get("HF_HUB_OFFLINE")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_world(args, spec):
    from ckptsweep.data.world.build import WorldConfig, build_world

    t0 = time.perf_counter()
    info = build_world(build(WorldConfig, spec, "world"), Path(args.out))
    log(f"world built in {time.perf_counter() - t0:.1f}s: "
        f"{json.dumps(info.get('sizes', {}), sort_keys=True)}")


def _online():
    """Let the prefetch verbs reach the hub unless the user asked for offline mode (then
    they fill nothing new and read the cache only)."""
    os.environ["HF_HUB_OFFLINE"] = _USER_OFFLINE or "0"


def cmd_prefetch(args, spec):
    from ckptsweep.data.snapshots import prefetch_dataset

    _online()
    out = Path(args.out)
    if spec.get("source") == "world" and "dataset" not in spec:
        # Every dataset the world generated, each in its own folder under --out.
        names = sorted(p.name for p in Path(args.raw).iterdir() if p.is_dir())
        jobs = [({"dataset": name, "source": "world"}, out / name) for name in names]
    else:
        jobs = [(spec, out)]
    for one, folder in jobs:
        info = prefetch_dataset(one, folder, raw=args.raw)
        log(f"{one['dataset']}: snapshot {json.dumps(info, sort_keys=True)}")


def cmd_prepare(args, spec):
    from ckptsweep.data.snapshots import MissingSnapshot, prepare_snapshot

    try:
        counts = prepare_snapshot(spec, Path(args.snapshot), Path(args.out))
    except (MissingSnapshot, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    for split, n in counts.items():
        log(f"{spec['dataset']}/{split}: {n} records")


def cmd_tokenizer(args, spec):
    from ckptsweep.data.tokenizer import VOCAB_SIZE, train_tokenizer

    texts = [json.loads(line)["text"] for line in open(args.corpus)]
    extra = Path(args.lines).read_text().splitlines()
    single = json.loads(Path(args.world_info).read_text())["single_token_words"]
    t0 = time.perf_counter()
    tok = train_tokenizer(texts, extra, spec.get("tokenizer", {}).get("vocab_size", VOCAB_SIZE),
                          Path(args.out), required_single=single)
    log(f"tokenizer: {len(tok)} tokens in {time.perf_counter() - t0:.1f}s")


def cmd_pretrain(args, spec):
    from ckptsweep.device import set_threads
    from ckptsweep.train.pretrain import PretrainConfig, pretrain

    set_threads(args.threads)
    key = f"models.{spec['model']}"
    cfg = build(PretrainConfig, spec["pretrain"], f"{key}.pretrain")
    pretrain(Path(args.corpus), Path(args.tokenizer), Path(args.out), cfg, int(spec["step"]),
             Path(args.resume_dir) if args.resume_dir else None, key=key, log=log)


def cmd_checkpoints(args, spec):
    from ckptsweep.checkpoints.manifest import pretrained_checkpoints, write_manifest

    if spec.get("source") == "hub":
        from ckptsweep.checkpoints.hub import resolve_hub

        _online()
        try:
            rows = resolve_hub(spec, log=log)
        except LookupError as e:
            raise SystemExit(f"error: {e}") from None
        write_manifest(args.out, rows)
        log(f"{len(rows)} checkpoints pinned -> {args.out}")
        return
    try:
        rows = pretrained_checkpoints(args.pretrained, spec.get("steps") or args.steps)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    write_manifest(args.out, rows)
    log(f"{len(rows)} checkpoints -> {args.out}")


def cmd_prefetch_model(args, spec):
    from ckptsweep.checkpoints.hub import prefetch_model
    from ckptsweep.checkpoints.manifest import read_manifest

    _online()
    rows = list(read_manifest(args.manifest).values())
    fetched = prefetch_model(rows, trust_remote_code=args.trust_remote_code == "True")
    tmp = Path(f"{args.out}.tmp")
    tmp.write_text(json.dumps(fetched, indent=1))
    os.replace(tmp, args.out)
    log(f"{len(fetched)} checkpoints in the cache -> {args.out}")


def cmd_finetune(args, spec):
    from ckptsweep.device import set_threads
    from ckptsweep.train.job import finetune_job

    set_threads(args.threads)
    finetune_job(spec, args.manifest, args.step, args.train, args.out, args.resume_dir,
                 args.attempt, args.compile_cache, args.argv)


def cmd_evaluate(args, spec):
    from ckptsweep.device import set_threads
    from ckptsweep.evaluate.job import evaluate_checkpoint

    set_threads(args.threads)
    evaluate_checkpoint(spec, args.manifest, args.out, args.cache_dir, args.default_cache_dir,
                        batch_size=args.batch_size)


def cmd_ablation(args, spec):
    from ckptsweep.device import set_threads
    from ckptsweep.evaluate.job import ablation

    set_threads(args.threads)
    ablation(spec, args.manifest, args.out, args.cache_dir, args.default_cache_dir,
             batch_size=args.batch_size)


def cmd_tables(args, spec):
    import pandas as pd
    import yaml

    from ckptsweep.analysis.amurochar import DEFAULT_ANALYSIS
    from ckptsweep.analysis.names import EXAMPLE_TABLES
    from ckptsweep.analysis.tables import write_tables

    # The analysis settings: --analysis FILE, else --spec, else the shipped config for the
    # imported AMURO & CHAR results.
    if args.analysis or not spec:
        path = Path(args.analysis) if args.analysis else DEFAULT_ANALYSIS
        if not path.exists():
            raise SystemExit(f"error: analysis settings {path} not found; pass --analysis")
        spec = yaml.safe_load(path.read_text())  # YAML, or JSON (a subset of it)
        log(f"analysis settings from {path}")
    scores = pd.read_parquet(args.scores)
    examples = pd.read_parquet(args.examples) if args.examples else None
    if examples is None:
        log(f"no --examples: skipping the per-example tables {', '.join(EXAMPLE_TABLES)}")
    ablation = pd.read_parquet(args.ablation) if args.ablation else None
    paths = write_tables(scores, examples, spec, Path(args.out), benchmarks=args.benchmarks,
                         ablation=ablation)
    log(f"{len(paths)} tables -> {args.out}")


def cmd_import_amurochar(args, spec):
    from ckptsweep.analysis.amurochar import write_import

    try:
        path, scores, notes = write_import(args.perf, args.official, args.out)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    for note in notes:
        log(f"note: {note}")
    log(f"{len(scores)} rows ({scores['variant'].nunique()} variants, "
        f"{scores['eval_set'].nunique()} eval sets) -> {path}")


def cmd_attribute(args, spec):
    from ckptsweep.attribution.run import run
    from ckptsweep.device import set_threads

    set_threads(args.threads)
    info = run(spec, args.manifest, args.world_info, args.corpus, Path(args.out), log=log)
    log(f"fact tracing {info['model']}/{info['slice']}: {info['n_learned']} of "
        f"{info['n_facts']} facts learned, {info['n_queries']} traced in "
        f"{info['seconds']:.1f}s -> {args.out}")


def cmd_advise(args, spec):
    import pandas as pd

    from ckptsweep.analysis.advisor_report import compute_advice, write_advice
    from ckptsweep.analysis.advisor_settings import AdvisorSettings

    # The spec is the advisor config block; flags given on the command line override it.
    flags = ("epsilon", "alpha", "seed", "n_boot", "top_k", "tokens_per_step", "n_params",
             "mfu", "peak_tflops", "finetune_hours", "eval_hours", "proxy_cost", "roles")
    try:
        settings = AdvisorSettings.from_block(spec, **{f: getattr(args, f) for f in flags})
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None

    def read(path):
        if path is None:
            return None
        return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)

    tables, notes = compute_advice(
        read(args.scores), settings, examples=read(args.examples),
        predictions_dir=args.predictions, benchmarks=args.benchmarks, bpb=read(args.bpb),
        proxy=read(args.proxy), transfer_metrics=read(args.transfer))
    for note in notes:
        log(f"note: {note}")
    paths = write_advice(tables, Path(args.out))
    log(f"advice on {len(tables['advisor'])} groups ({settings.epsilon=}, "
        f"{settings.alpha=}), {len(tables['predictors_groups'])} predictor checks -> "
        f"{args.out} ({len(paths)} files)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("CKPTSWEEP_WARM") and "SLURM_JOB_ID" not in os.environ:
        from ckptsweep.operate import warm  # fork from its server (never in a Slurm job)

        if (code := warm.run(argv)) is not None:
            raise SystemExit(code)
    p = argparse.ArgumentParser(prog="ckptsweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", default="{}", help="the config block, as JSON")
        s.set_defaults(fn=fn)
        return s

    s = verb("world", cmd_world, "build the synthetic world")
    s.add_argument("--out", required=True)
    s = verb("prefetch", cmd_prefetch, "snapshot one dataset's splits (hub or world) with "
             "save_to_disk")
    s.add_argument("--raw", help="the world's raw data folder (source: world)")
    s.add_argument("--out", required=True)
    s = verb("prepare", cmd_prepare, "convert one dataset's snapshot to canonical records")
    s.add_argument("--snapshot", required=True, help="resources/snapshots/{dataset}")
    s.add_argument("--out", required=True)
    s = verb("tokenizer", cmd_tokenizer, "train a byte-level BPE tokenizer on the world")
    s.add_argument("--corpus", required=True)
    s.add_argument("--lines", required=True)
    s.add_argument("--world-info", required=True, help="world.json (words that must be "
                   "single tokens)")
    s.add_argument("--out", required=True)
    s = verb("pretrain", cmd_pretrain, "pre-train a tiny OLMo to one checkpoint step")
    s.add_argument("--corpus", required=True)
    s.add_argument("--tokenizer", required=True, help="the tokenizer folder")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--resume-dir", help="training states of this model's run, outside the "
                   "job's outputs: started from, and added to")
    s.add_argument("--out", required=True, help="the checkpoint's folder")
    s = verb("checkpoints", cmd_checkpoints, "write the checkpoint manifest (hub: resolve "
             "steps to branches pinned to commits)")
    s.add_argument("--pretrained", default="", help="pre-training folder (source: pretrain)")
    s.add_argument("--steps", nargs="+", help="steps (default: the spec's)")
    s.add_argument("--out", required=True)
    s = verb("prefetch-model", cmd_prefetch_model, "download a manifest's pinned hub "
             "checkpoints into HF_HOME")
    s.add_argument("--manifest", required=True)
    s.add_argument("--trust-remote-code", default="False", choices=["True", "False"])
    s.add_argument("--out", required=True)
    s = verb("finetune", cmd_finetune, "fine-tune one checkpoint")
    s.add_argument("--manifest", required=True)
    s.add_argument("--step", required=True)
    s.add_argument("--train", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--resume-dir", help="resumable state, outside the job's outputs: saved "
                   "periodically and on SIGTERM, resumed from, removed when done")
    s.add_argument("--attempt", type=int, default=1, help="scheduler attempt (1, 2, ...): "
                   "each retry halves the micro-batch and doubles accumulation")
    s.add_argument("--compile-cache", help="TORCHINDUCTOR_CACHE_DIR for compile: true "
                   "(unless already set)")
    s.add_argument("--out", required=True)
    s = verb("evaluate", cmd_evaluate, "evaluate the base model and the fine-tunes of one "
             "checkpoint (the spec's variants) on their eval sets")
    s.add_argument("--manifest", required=True, help="checkpoint manifest (the base model)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--cache-dir", help="prediction cache folder (overrides the spec's "
                   "evaluation.cache_dir; an empty string turns the cache off)")
    s.add_argument("--default-cache-dir", help="prediction cache folder when the spec's "
                   "evaluation.cache_dir is null (the workflow's resources/cache/predictions)")
    s.add_argument("--batch-size", help="batch policy: auto, or examples per forward "
                   "(overrides the spec's evaluation.batch_size; not part of it)")
    s.add_argument("--out", required=True, help="folder for one {variant}.parquet each")
    s = verb("ablation", cmd_ablation, "score the base and fine-tunes of one checkpoint "
             "with every classification prediction method (the paper's Table 2)")
    s.add_argument("--manifest", required=True, help="checkpoint manifest (the base model)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--cache-dir", help="prediction cache folder (overrides the spec's "
                   "evaluation.cache_dir; an empty string turns the cache off)")
    s.add_argument("--default-cache-dir", help="prediction cache folder when the spec's "
                   "evaluation.cache_dir is null (the workflow's resources/cache/predictions)")
    s.add_argument("--batch-size", help="batch policy: auto, or examples per forward "
                   "(overrides the spec's evaluation.batch_size; not part of it)")
    s.add_argument("--out", required=True)
    s = verb("tables", cmd_tables, "write every table for a scores file")
    s.add_argument("--scores", required=True)
    s.add_argument("--examples", help="per-example table (optional: without it the "
                   "tables that need per-example data are skipped)")
    s.add_argument("--analysis", help="analysis settings, YAML or JSON (default: --spec, or "
                   "without it config/amurochar_analysis.yaml)")
    s.add_argument("--benchmarks", help="Snakemake benchmarks folder: also write gpu_hours")
    s.add_argument("--ablation", help="predictions of `ckptsweep ablation`: also write the "
                   "ablation table")
    s.add_argument("--out", required=True)
    s = verb("import-amurochar", cmd_import_amurochar,
             "import the AMURO & CHAR authors' released CSVs into a scores-schema file")
    s.add_argument("--perf", required=True, help="all_perf_table.csv")
    s.add_argument("--official", required=True, help="official_eval_table.csv")
    s.add_argument("--out", required=True, help="parquet, e.g. results/imported/amurochar.parquet "
                   "(never results/scores.parquet)")

    s = verb("attribute", cmd_attribute, "fact tracing (FTRACE) of one model and slice: "
             "BM25, TracIn and embeddings on the learned facts")
    s.add_argument("--manifest", required=True, nargs="+", help="checkpoint manifest(s)")
    s.add_argument("--world-info", required=True, help="world.json (facts and pools)")
    s.add_argument("--corpus", help="corpus.jsonl (the pretrain slice's training set)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True, help="folder: queries.csv and info.json")

    s = verb("advise", cmd_advise, "checkpoint advice on a finished grid (best, the last "
             "checkpoint's regret, earliest non-inferior, compute saved) and cheap predictors "
             "validated against it; --spec is the advisor block")
    s.add_argument("--scores", required=True, help="scores parquet (results/scores.parquet "
                   "or an import such as results/imported/amurochar.parquet)")
    s.add_argument("--examples", help="per-example scores (results/examples.parquet): a "
                   "paired bootstrap; without it, a normal test on the intervals")
    s.add_argument("--predictions", help="results/predictions: the base models' label "
                   "log-probabilities as predictors (needs --examples)")
    s.add_argument("--benchmarks", help="Snakemake benchmarks folder: measured fine-tune "
                   "and evaluation GPU hours")
    s.add_argument("--bpb", help="per-example bits-per-byte table of the base models "
                   "(parquet or CSV; needs --examples)")
    s.add_argument("--proxy", help="scores of the proxy fine-tunes (scores schema)")
    s.add_argument("--transfer", help="transfer_metrics.csv of the transfer population")
    s.add_argument("--epsilon", type=float, help="non-inferiority margin (metric units)")
    s.add_argument("--alpha", type=float, help="level of the one-sided test")
    s.add_argument("--seed", type=int)
    s.add_argument("--n-boot", type=int)
    s.add_argument("--top-k", type=int)
    s.add_argument("--roles", nargs="+", help="eval roles (id, ood, cross-task, benchmark)")
    s.add_argument("--tokens-per-step", type=float, help="pre-training tokens per step "
                   "(default: the scores' tokens / step)")
    s.add_argument("--n-params", type=float, help="model parameters N (6N FLOPs per token)")
    s.add_argument("--mfu", type=float, help="assumed pre-training MFU")
    s.add_argument("--peak-tflops", type=float, help="peak TFLOP/s of one GPU")
    s.add_argument("--finetune-hours", type=float, help="GPU hours of one fine-tune where "
                   "no benchmark file has it")
    s.add_argument("--eval-hours", type=float, help="GPU hours of one variant's evaluation "
                   "where no benchmark file has it")
    s.add_argument("--proxy-cost", type=float, help="a proxy fine-tune's cost as a fraction "
                   "of a full one")
    s.add_argument("--out", required=True, help="folder for the tables and figures")

    from ckptsweep.evaluate.bpb import register as register_bpb  # the advisor's predictors
    from ckptsweep.evaluate.proxy import register as register_proxy
    from ckptsweep.operate.verbs import register  # plan, status (argparse only)

    for add in (register, register_proxy, register_bpb):
        add(verb)
    p.set_defaults(main=main)  # for `ckptsweep warm`, whose workers run the other verbs

    args = p.parse_args(argv)
    args.argv = argv  # to re-launch (finetune)
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: --spec is not valid JSON: {e}") from None
    try:
        args.fn(args, spec)
    except ConfigError as e:  # a bad config value reached a job: name its key
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])

"""The operator's verbs of the command line: `ckptsweep plan`, `status`, `check`, `migrate`,
`share`, `warm`.

`register` adds them to `ckptsweep.cli`'s parser (it passes its ``verb`` helper); the
work is imported only when a verb runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_plan(args, spec) -> None:
    import yaml

    from ckptsweep.operate.plan import build, default_profile
    from ckptsweep.operate.plan_text import render, to_json
    from ckptsweep.study.config import Study

    try:
        study = Study.from_config(yaml.safe_load(Path(args.configfile).read_text()))
        plan = build(study, args.directory, args.profile or default_profile(study),
                     args.device, benchmarks=not args.no_benchmarks)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(to_json(plan, study), indent=1) if args.json else render(plan, study),
          end="\n" if args.json else "")


def cmd_status(args, spec) -> None:
    from ckptsweep.operate.status_cli import status

    print(status(args), end="")


def cmd_check(args, spec) -> None:
    """A config file checked the way a run checks it, with what Snakemake cannot say: a
    YAML syntax error's file, line and column."""
    import yaml

    from ckptsweep.errors import ConfigError
    from ckptsweep.study.checks import check
    from ckptsweep.study.config import Study

    path = Path(args.configfile)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SystemExit(f"error: {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SystemExit(f"error: {where}: not valid YAML: "
                         f"{getattr(e, 'problem', None) or e}") from None
    try:
        check(Study.from_config(raw))
    except ConfigError as e:
        raise SystemExit(f"error: {path}: {e}") from None
    print(f"{path}: ok")


def cmd_migrate(args, spec) -> None:
    from ckptsweep.operate.migrate import migrate

    migrate(args.configfile, Path(args.directory), args.cores, args.dry_run)


def cmd_share(args, spec) -> None:
    from ckptsweep.operate.share import share

    share(Path(args.source), Path(args.target), args.paths)


def cmd_warm(args, spec) -> None:
    from ckptsweep.operate.warm import serve

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    raise SystemExit(serve(cmd, args.main))


def register(verb) -> None:
    """Add the operator's verbs through the cli's ``verb(name, fn, help)``."""
    s = verb("plan", cmd_plan, "before submitting: jobs, GPUs, GPU-hours, wall time and "
             "disk per rule, against the profile's time limits (submits nothing)")
    s.add_argument("--configfile", default="config/demo.yaml", help="the study config")
    s.add_argument("--profile", help="Snakemake profile folder or name (default: "
                   "profiles/slurm for hub models, else profiles/local)")
    s.add_argument("--device", help="plan the GPU rules on this device (A100, H200, cpu) "
                   "instead of the profile's gpu_model")
    s.add_argument("--directory", default=".", help="the study's working directory (its "
                   "resources/data and benchmarks/ are read if there)")
    s.add_argument("--no-benchmarks", action="store_true", help="ignore finished jobs' "
                   "benchmarks/: the repository's throughput table only")
    s.add_argument("--json", action="store_true", help="the plan as JSON")
    s = verb("status", cmd_status, "where the study stands: one line per job (done, "
             "running, pending, incomplete, failed, with Slurm's cause) and the command "
             "that re-runs the failed and incomplete ones")
    s.add_argument("--configfile", default="config/demo.yaml", help="the study config")
    s.add_argument("--profile", help="the profile of the re-run command (default: "
                   "profiles/slurm if the study ran on Slurm, else profiles/local)")
    s.add_argument("--directory", default=".", help="the study's working directory")
    s.add_argument("--state", help="list only jobs in these states (comma-separated); "
                   "the summary and the command stay whole")
    s.add_argument("--json", action="store_true", help="the same as JSON")
    s = verb("check", cmd_check, "check a config file as a run would (YAML syntax with "
             "its line, the schema, the cross-references), running nothing")
    s.add_argument("--configfile", default="config/demo.yaml", help="the study config")
    s = verb("migrate", cmd_migrate, "keep a study finished across a change of dependency "
             "grain: prove each finished job's spec unchanged, mark exactly those current")
    s.add_argument("--configfile", default="config/demo.yaml", help="the study config")
    s.add_argument("--directory", default=".", help="the study's working directory")
    s.add_argument("--cores", type=int, default=2, help="for the cheap jobs it runs")
    s.add_argument("--dry-run", action="store_true", help="say what it would do")
    s = verb("warm", cmd_warm, "run a local command (snakemake ...) with its torch jobs "
             "forked from one process that imported torch and transformers once: saves "
             "4-6 s per job on a CPU (never inside Slurm jobs)")
    s.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    s = verb("share", cmd_share, "start a study in another folder from a finished one's "
             "outputs (hard links, with their Snakemake records): e.g. the demo's adaptive "
             "sweep from the full demo's world, data and pre-trained checkpoints")
    s.add_argument("--from", dest="source", default=".", help="the finished study's folder")
    s.add_argument("--to", dest="target", required=True, help="the new study's folder")
    s.add_argument("paths", nargs="+", help="paths to share, relative to both folders")

"""`ckptsweep status` end to end: the study, its DAG, the states, the output."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ckptsweep.operate import status_text
from ckptsweep.operate.dag import jobs
from ckptsweep.operate.slurm import run_ids
from ckptsweep.operate.status import job_states, snakemake_alive


def default_profile(workdir: Path) -> str:
    """profiles/slurm when the study has been run through Slurm, else profiles/local."""
    ran_on_slurm = (workdir / ".snakemake" / "slurm_logs").is_dir() or run_ids(workdir)
    return "profiles/slurm" if ran_on_slurm else "profiles/local"


def status(args) -> str:
    import yaml

    from ckptsweep.study.config import Study

    workdir = Path(args.directory).resolve()
    configfile = args.configfile
    if not (workdir / configfile).exists() and not Path(configfile).exists():
        raise SystemExit(f"error: config {configfile} not found")
    path = workdir / configfile if (workdir / configfile).exists() else Path(configfile)
    study = Study.from_config(yaml.safe_load(path.read_text()))
    try:
        dag_jobs = jobs(path, workdir)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None
    statuses, how = job_states(dag_jobs, workdir, study)
    profile = args.profile or default_profile(workdir)
    notes = []
    locks = list((workdir / ".snakemake" / "locks").glob("*"))
    alive = snakemake_alive(workdir)
    if locks and not alive:
        notes.append("A lock is left in .snakemake/locks and no snakemake runs here: if none "
                     "runs elsewhere either, first: "
                     f"snakemake --profile {profile} --configfile {configfile} --unlock")
    if alive:
        notes.append("A snakemake process is running in this directory.")
    if args.json:
        return json.dumps(status_text.to_json(statuses, configfile, profile, notes, how),
                          indent=1) + "\n"
    header = (f"ckptsweep status: {workdir} (config {configfile}) at "
              f"{time.strftime('%Y-%m-%d %H:%M')}; Slurm states from "
              f"{how or 'nowhere (no Slurm run found)'}")
    shown = None
    if args.state:
        wanted = set(args.state.split(","))
        shown = [s for s in statuses if s.state in wanted]
    return status_text.render(statuses, header, configfile, profile, notes, shown)

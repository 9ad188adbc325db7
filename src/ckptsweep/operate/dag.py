"""The workflow's jobs as Snakemake sees them now, read without running or locking it.

`jobs` builds the DAG of a study the way ``snakemake --summary`` does (through Snakemake's
API, with ``lock_warn_only``, so it works beside a running snakemake and after it died)
and returns each job with its rule, wildcards, outputs, log and benchmark files, whether
Snakemake would run it and why, and what its metadata records (start and end, the
external job id, an incomplete marker). Nothing is written but Snakemake's own caches.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DagJob:
    rule: str
    wildcards: dict[str, str]
    outputs: list[str]
    log: list[str] = field(default_factory=list)
    benchmark: str | None = None
    needrun: bool = False
    reason: str = ""
    exists: bool = False
    """Every output is there."""
    incomplete: bool = False
    """Snakemake's incomplete marker is set on an output (started, never finished)."""
    started: float | None = None
    ended: float | None = None
    external_jobid: str | None = None
    local: bool = False
    upstream: list[tuple[str, str]] = field(default_factory=list)
    """(rule, name) of the jobs whose outputs this one reads."""

    @property
    def name(self) -> str:
        """``{wildcard values joined by /}``: the job's name in logs and benchmarks."""
        return _name(self.rule, self.wildcards)

    @property
    def slurm_key(self) -> str:
        """The wildcards as the Slurm executor names the job (comment, log folder)."""
        return "_".join(self.wildcards.values()).replace("/", "_")


def jobs(configfile: str | Path | None = None, workdir: str | Path = ".",
         snakefile: str | Path = "Snakefile") -> list[DagJob]:
    """Every job of the workflow for ``configfile``, done or not (see the module doc), in
    the order the workflow defines its rules, then by name."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    workdir = Path(workdir).resolve()
    snakefile = (workdir / snakefile).resolve()
    configs = [Path(configfile).resolve()] if configfile else []
    cwd = os.getcwd()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            wf_api = api.workflow(resource_settings=ResourceSettings(),
                                  config_settings=ConfigSettings(configfiles=configs),
                                  snakefile=snakefile, workdir=workdir)
            wf_api.dag(DAGSettings())
            wf = wf_api._workflow
            wf._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
            wf._build_dag()
            order = {rule.name: i for i, rule in enumerate(wf.rules)}
            found = [_job(wf, job) for job in wf.dag.jobs]
            return sorted(found, key=lambda j: (order.get(j.rule, len(order)), j.name))
    except Exception as e:
        raise RuntimeError(f"could not read the workflow's jobs ({type(e).__name__}: "
                           f"{e})\n{sink.getvalue()[-2000:]}") from e
    finally:
        os.chdir(cwd)


def _name(rule: str, wildcards) -> str:
    return "/".join(str(v) for v in wildcards.values()) or rule


def _job(wf, job) -> DagJob:
    dag, persistence = wf.dag, wf.persistence
    outputs = [str(f) for f in job.output]
    reason = dag.reason(job)
    meta = None
    for f in job.output:
        meta = persistence.metadata(f)
        if meta is not None:
            break
    # The marker, whether or not the output exists yet (a fine-tune writes its folder
    # at the end): the job started and never finished.
    keys = [persistence._get_key(f) for f in job.output]
    marked = persistence._filter_incomplete_keys(keys) if keys else set()
    running_id = next(iter(persistence._get_external_jobids(marked)), None) if marked else None
    benchmark = job.benchmark
    return DagJob(
        rule=job.rule.name,
        wildcards={k: str(v) for k, v in job.wildcards_dict.items()},
        outputs=outputs,
        log=[str(f) for f in job.log],
        benchmark=str(benchmark) if benchmark else None,
        needrun=bool(dag.needrun(job)),
        reason=str(reason) if reason else "",
        exists=all(os.path.exists(f) for f in outputs),
        incomplete=bool(marked),
        started=getattr(meta, "starttime", None) if meta else None,
        ended=getattr(meta, "endtime", None) if meta else None,
        external_jobid=running_id or (getattr(meta, "external_jobid", None) if meta else None),
        local=bool(job.is_local),
        upstream=[(dep.rule.name, _name(dep.rule.name, dep.wildcards_dict))
                  for dep in dag.dependencies[job]],
    )

"""`ckptsweep migrate` on a study finished by the code before the per-checkpoint grain.

The tiny study is run to the end by the last commit that had one pre-training job and one
manifest per model (from this repository's history), then the new code takes over: before
the migration a dry run would redo every pre-training, fine-tune and evaluation; after it,
only the aggregates, and no byte of a finished result has changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_workflow import job_counts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BEFORE = "9f3a001"
"""The last commit before this change's dependency grain (the previous landed main)."""
TINY = "tests/config/tiny.yaml"
EXPENSIVE = {"pretrain", "finetune", "evaluate", "ablation", "attribute"}
pytestmark = pytest.mark.workflow


def run(cmd, cwd, src):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), "LC_ALL": "C.UTF-8",
           "PYTHONPATH": str(src)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but Snakemake's directory timestamps."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".snakemake_timestamp"}


@pytest.fixture(scope="module")
def old_study(tmp_path_factory):
    """The tiny study, finished by the code of ``BEFORE``."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                      capture_output=True).returncode != 0:
        msg = f"commit {BEFORE} is not in this clone's history (a shallow clone?)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    work = tmp_path_factory.mktemp("old")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    run([str(BIN / "snakemake"), "--profile", "profiles/local", "--cores", "2",
         "--configfile", TINY], work, work / "src")
    return work


def test_a_migrated_study_keeps_every_result_and_reruns_nothing_expensive(old_study):
    work = old_study
    before = {d: digests(work / d) for d in ("results/models", "results/predictions",
                                            "results/ablation", "results/attribution")}
    pretrained = digests(work / "resources/pretrained")
    scores = (work / "results/scores.parquet").read_bytes()
    # The new code: workflow and package (src stays the old one's, now unused).
    for item in ("Snakefile", "workflow", "profiles"):
        shutil.rmtree(work / item, ignore_errors=True) if (work / item).is_dir() else None
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    dry = [str(BIN / "snakemake"), "-n", "--cores", "2", "--configfile", TINY]
    counts = job_counts(run(dry, work, ROOT / "src"))
    assert EXPENSIVE & set(counts), "nothing to migrate: this test would prove nothing"

    out = run([str(BIN / "ckptsweep"), "migrate", "--configfile", TINY], work, ROOT / "src")
    assert "will re-run" not in out, out
    after = job_counts(run(dry, work, ROOT / "src"))
    assert not EXPENSIVE & set(after), after
    assert {d: digests(work / d) for d in before} == before
    assert {k: v for k, v in digests(work / "resources/pretrained").items()
            if k in pretrained} == pretrained  # no finished checkpoint rewritten

    # The aggregates re-run on the same predictions: the same scores, byte for byte.
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", TINY], work, ROOT / "src")
    assert (work / "results/scores.parquet").read_bytes() == scores
    assert "Nothing to be done" in run(dry, work, ROOT / "src")

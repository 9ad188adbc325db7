"""The checkpoint advisor's adaptive sweep in the workflow (``advisor.mode: adaptive``): a
dry run shows the first phase (the proxy on every checkpoint, full fine-tunes of the last
checkpoint only), the second phase (the proxy's pick) appears once the Snakemake
checkpoint has run, and the sweep ends with its recommendation and its GPU-hours against
the full grid's. Also: the same config dry-runs under both profiles."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_workflow import copy_workflow, dry, job_counts, snakemake

CONFIG = "tests/config/tiny_adaptive.yaml"
pytestmark = pytest.mark.workflow


def finetune_steps(out: str) -> set[str]:
    """The checkpoints whose full fine-tunes a dry run lists."""
    return set(re.findall(r"output: results/models/tiny/(\d+)/", out))


@pytest.mark.parametrize("profile", ["profiles/local", "profiles/slurm"])
def test_the_first_phase_runs_the_proxy_and_only_the_last_checkpoints_fine_tunes(profile):
    out = dry("--forceall", "--profile", profile, "--configfile", CONFIG)
    counts = job_counts(out)
    assert counts["proxy"] == 3 and counts["proxy_scores"] == 1
    assert counts["adaptive_select"] == counts["adaptive_advice"] == 1
    assert counts["finetune"] == 2 and counts["evaluate"] == 1  # the last checkpoint's
    assert finetune_steps(out) == {"30"}
    assert "aggregate" not in counts and "advise" not in counts  # no full grid
    assert "checkpoint jobs, which will result in alteration of the DAG" in out


@pytest.fixture(scope="module")
def phase_one(tmp_path_factory):
    """A copy of the workflow that ran the tiny adaptive config to its checkpoint."""
    work = copy_workflow(tmp_path_factory.mktemp("adaptive"))
    proc = snakemake("results/advisor/adaptive/selection.json", "--profile", "profiles/local",
                     "--cores", "2", "--configfile", CONFIG, cwd=work, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return work


def test_the_second_phase_appears_once_the_first_is_done(phase_one):
    selection = json.loads((phase_one / "results/advisor/adaptive/selection.json").read_text())
    chosen = selection["models"]["tiny"]
    assert len(chosen["top_k"]) == 1 and chosen["last"] == 30
    assert chosen["steps"] == sorted([*chosen["top_k"], 30])
    assert {r["step"] for r in chosen["ranking"]} == {10, 20, 30}
    assert not (phase_one / "results/models").exists()  # no full fine-tune yet
    out = dry("--configfile", CONFIG, cwd=phase_one)
    counts = job_counts(out)
    assert "proxy" not in counts and "adaptive_select" not in counts
    # The pick's fine-tunes and evaluation join the last checkpoint's; nothing else.
    assert finetune_steps(out) == {str(s) for s in chosen["steps"]}
    assert counts["finetune"] == 2 * len(chosen["steps"])
    assert counts["evaluate"] == len(chosen["steps"])


def test_the_sweep_recommends_with_its_interval_and_cost(phase_one):
    proc = snakemake("--profile", "profiles/local", "--cores", "2", "--configfile", CONFIG,
                     cwd=phase_one, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    result = json.loads((phase_one / "results/advisor/adaptive/recommendation.json")
                        .read_text())
    chosen = result["selection"]["models"]["tiny"]["steps"]
    rows = {r["train_task"]: r for r in result["in_domain"]}
    assert set(rows) == {"nli", "summ"}
    for r in rows.values():
        assert r["recommended_step"] in chosen and r["last_step"] == 30
        assert r["recommended_low"] <= r["recommended_value"] <= r["recommended_high"]
        assert r["checkpoints"] == ",".join(map(str, chosen))
    cost = result["cost"]
    assert set(cost["spent_gpu_hours"]) == {"proxy", "finetune", "evaluate"}
    assert all(v > 0 for v in cost["spent_gpu_hours"].values())
    assert cost["full_grid_basis"].startswith("ckptsweep plan")
    assert 0 < cost["fraction_of_full_grid"] < 1.5
    assert (phase_one / "results/advisor/adaptive/recommendation.html").exists()
    # Only the chosen checkpoints were fine-tuned.
    ran = {p.name for p in (phase_one / "results/models/tiny").iterdir()}
    assert ran == {str(s) for s in chosen}
    assert "Nothing to be done" in dry("--configfile", CONFIG, cwd=phase_one)

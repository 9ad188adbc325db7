"""config/config.yaml: the paper's study validates, and its dry run (no network: branch
resolution and downloads are jobs, not parse-time work) lists the paper's grid."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ckptsweep.errors import ConfigError
from ckptsweep.study import checks
from ckptsweep.study import grid as study
from ckptsweep.study.config import Study

from .test_workflow import job_counts

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "config/config.yaml").read_text())
PAPER = Study.from_config(RAW)
BIN = Path(sys.executable).parent


def test_the_paper_config_validates():
    checks.check(PAPER)


def test_the_paper_grid():
    olmo, llama = PAPER.models["olmo1b"], PAPER.models["llama3_8b"]
    assert olmo.repo == "allenai/OLMo-1B-hf" and len(olmo.steps) == 8
    assert olmo.refs == {738020: "main"} and not olmo.trust_remote_code
    assert [f.dataset for f in study.finetunes(PAPER, "olmo1b")] == [
        "mnli", "paws", "socialiqa", "xsum", "tulu"]
    # Llama-3-8B: the final checkpoint, the four SFT tasks, Appendix F's settings.
    fts = study.finetunes(PAPER, "llama3_8b")
    assert study.steps(PAPER, "llama3_8b") == ["1"]
    assert [f.dataset for f in fts] == ["mnli", "paws", "socialiqa", "xsum"]
    for f in fts:
        s = f.settings
        assert f.lr == 5e-6 and s["epochs"] == 2 and s["batch_size"] * s["grad_accum"] == 16
    assert study.finetune(PAPER, "xsum-lr5e-6-s0", "llama3_8b").settings["epochs"] == 2
    # RTE (two-way) for MNLI fine-tunes: not_entailment scored as neutral + contradiction.
    rte = {"entailment": ["entailment"], "not_entailment": ["neutral", "contradiction"]}
    assert study.answer_words(PAPER, "mnli-lr5e-6-s0", "llama3_8b", "rte") == rte
    assert study.answer_words(PAPER, "base", "olmo1b", "rte") is None
    assert study.answer_words(PAPER, "paws-lr2e-6-s0", "olmo1b", "rte") is None
    # Its training state (~128 GB) is sharded over 4 GPUs; the GPU-hours table counts 4.
    assert study.finetune_gpus(PAPER) == {f"llama3_8b/{f.name}": 4 for f in fts}
    assert study.finetune(PAPER, "xsum-lr2e-7-s0", "olmo1b").settings["epochs"] == 3
    n_ft = sum(len(study.steps(PAPER, m)) * len(study.finetunes(PAPER, m))
               for m in PAPER.models)
    assert n_ft == 8 * 5 + 1 * 4 == 44
    assert llama.trust_remote_code is False


def test_hub_blocks_are_checked():
    bad = yaml.safe_load(yaml.safe_dump(RAW))
    del bad["models"]["olmo1b"]["repo"]
    with pytest.raises(ConfigError, match=r"models\.olmo1b: a hub model needs `repo`"):
        checks.check(Study.from_config(bad))
    bad = yaml.safe_load(yaml.safe_dump(RAW))
    bad["models"]["olmo1b"]["refs"] = {5: "main"}
    with pytest.raises(ConfigError, match=r"models\.olmo1b\.refs: names a step"):
        checks.check(Study.from_config(bad))
    bad = yaml.safe_load(yaml.safe_dump(RAW))
    del bad["datasets"]["qqp"]["hub"]
    with pytest.raises(ConfigError, match=r"datasets\.qqp\.hub: required"):
        checks.check(Study.from_config(bad))


@pytest.mark.workflow
def test_the_paper_dry_run_builds_the_whole_grid_offline(tmp_path):
    profile = ROOT / "profiles/slurm"
    args = [str(BIN / "snakemake"), "-n", "-s", str(ROOT / "Snakefile"), "--directory",
            str(tmp_path), "--configfile", str(ROOT / "config/config.yaml")]
    args += ["--profile", str(profile)] if (profile / "config.yaml").exists() else ["-c1"]
    # No network: any hub access at parse time would fail (or hang) here.
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), "LC_ALL": "C.UTF-8",
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    n_sets = len(PAPER.datasets)
    n_eval = sum(len(study.steps(PAPER, m)) for m in PAPER.models)  # one per checkpoint
    assert counts["finetune"] == 44
    assert counts["evaluate"] == n_eval == 8 + 1
    # One manifest and one download per checkpoint: a job depends on its own step only.
    assert counts["checkpoints"] == counts["prefetch_model"] == n_eval
    assert counts["ablation"] == 2
    assert counts["prefetch"] == counts["prepare_data"] == n_sets
    assert "pretrain" not in counts and "world" not in counts
    assert took < 60, f"dry run took {took:.0f} s"
    assert not (tmp_path / "hf").exists()  # nothing fetched while planning
    # A fine-tune's GPUs and host memory (per process x GPUs) come from its settings.
    jobs = re.findall(r"\nrule finetune:\n(?:    .*\n)*?    wildcards: model=(\w+),.*\n"
                      r"    resources: .*?mem_mb=(\d+),.*?gpu=(\d+)", proc.stdout)
    assert len(jobs) == 44 and set(jobs) == {("olmo1b", "32000", "1"),
                                              ("llama3_8b", "64000", "4")}, set(jobs)

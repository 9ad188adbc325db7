"""The Snakemake workflow: lint, dry runs, config isolation, a complete tiny run, and
incremental re-runs. The tiny run is shared by the tests that need finished outputs."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests/config/tiny.yaml"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.workflow


def snakemake(*args, cwd=ROOT, check=True):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Per-rule counts from the 'Job stats' table of a dry run."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def dry(*args, cwd=ROOT):
    proc = snakemake("-n", "--cores", "2", *args, cwd=cwd)
    return proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = snakemake("--lint", "--configfile", "config/demo.yaml", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_dry_run_lists_the_whole_grid():
    # --forceall: the whole grid, whatever a local run has already produced.
    counts = job_counts(dry("--forceall", "--configfile", "config/demo.yaml"))
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    n_steps = len(cfg["models"]["tiny"]["steps"])
    n_ft = sum(len(t.get("seeds", [0])) for t in
               ({**cfg["finetune"]["defaults"], **(v or {})} for v in
                cfg["finetune"]["tasks"].values()))
    # The transfer population: one instruction fine-tune per checkpoint (models.<m>.finetune).
    # One evaluation job per checkpoint (base and fine-tunes together).
    pop = [m for name, m in cfg["models"].items() if name != "tiny"]
    n_pop = sum(len(m["steps"]) for m in pop)
    assert all(m["finetune"] == ["instruct"] for m in pop)
    assert counts["finetune"] == n_steps * n_ft + n_pop
    assert counts["evaluate"] == n_steps + n_pop
    assert counts["prepare_data"] == len(cfg["datasets"])
    assert counts["pretrain"] == 1 + len(pop)


def test_configfile_replaces_the_default_config():
    """`--configfile` must not deep-merge over config/demo.yaml: the tiny config has fewer
    datasets, and none of the demo's others may leak into its grid."""
    out = dry("--forceall", "--configfile", str(TINY))
    tiny = yaml.safe_load(TINY.read_text())
    demo = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    leaked = set(demo["datasets"]) - set(tiny["datasets"])
    assert leaked, "the tiny config must omit some demo datasets for this test to mean anything"
    for name in leaked:
        assert f"resources/data/{name}/" not in out, f"{name} leaked from the default config"
    assert job_counts(out)["prepare_data"] == len(tiny["datasets"])


def test_bad_config_is_rejected_naming_the_key(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["finetune"]["tasks"]["unknown_task"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--cores", "1", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert "finetune.tasks.unknown_task" in proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A copy of the workflow that ran the tiny config to the end."""
    work = tmp_path_factory.mktemp("tiny")
    for item in ("Snakefile", "workflow", "config", "profiles", "envs", "tests/config"):
        src = ROOT / item
        dst = work / item
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    proc = snakemake("--profile", "profiles/local", "--cores", "2",
                     "--configfile", "tests/config/tiny.yaml", cwd=work, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return work


def test_tiny_run_produces_every_output(tiny_run):
    import pandas as pd

    scores = pd.read_parquet(tiny_run / "results/scores.parquet")
    expected = {"model", "step", "tokens", "variant", "train_task", "lr", "seed", "eval_set",
                "role", "format", "shots", "metric", "value", "ci_low", "ci_high", "n"}
    assert expected <= set(scores.columns)
    assert set(scores["role"]) >= {"base", "id", "ood", "cross-task", "benchmark"}
    assert scores["value"].between(0, 1).all()
    assert (tiny_run / "results/tables/summary.json").stat().st_size > 0
    assert list((tiny_run / "results/figures").glob("*.png"))
    assert list((tiny_run / "logs/finetune").rglob("*.log"))
    assert list((tiny_run / "benchmarks/evaluate").rglob("*.tsv"))


def test_second_run_has_nothing_to_do(tiny_run):
    out = dry("--configfile", "tests/config/tiny.yaml", cwd=tiny_run)
    assert "Nothing to be done" in out


def edited(tiny_run, edit, name):
    cfg = yaml.safe_load((tiny_run / "tests/config/tiny.yaml").read_text())
    edit(cfg)
    path = tiny_run / f"tests/config/{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return job_counts(dry("--configfile", str(path), cwd=tiny_run))


def test_editing_one_learning_rate_reruns_only_its_jobs(tiny_run):
    cfg = yaml.safe_load((tiny_run / "tests/config/tiny.yaml").read_text())
    steps = len(cfg["models"]["tiny"]["steps"])
    task = next(iter(cfg["finetune"]["tasks"]))

    def new_lr(c):
        c["finetune"]["tasks"][task] = {**(c["finetune"]["tasks"][task] or {}), "lr": [7e-4]}

    counts = edited(tiny_run, new_lr, "lr")
    seeds = len((cfg["finetune"]["tasks"][task] or {}).get(
        "seeds", cfg["finetune"]["defaults"]["seeds"]))
    n = steps * seeds  # the renamed fine-tunes and the evaluations of their checkpoints
    # (one job per checkpoint), nothing else...
    # ...but the model's ablation (tiny.yaml's analysis.ablation) too: it scores the
    # fine-tunes of the final checkpoint trained on nli, the task edited here, so its
    # one job per model re-runs (renamed inputs, changed spec).
    assert task == "nli"
    assert counts == {"finetune": n, "evaluate": steps, "ablation": 1, "aggregate": 1,
                      "tables": 1, "figures": 1, "all": 1, "total": n + steps + 5}


def test_editing_epochs_of_one_task_reruns_only_its_jobs(tiny_run):
    cfg = yaml.safe_load((tiny_run / "tests/config/tiny.yaml").read_text())
    steps = len(cfg["models"]["tiny"]["steps"])
    task = next(iter(cfg["finetune"]["tasks"]))
    seeds = len((cfg["finetune"]["tasks"][task] or {}).get(
        "seeds", cfg["finetune"]["defaults"]["seeds"]))

    def more_epochs(c):
        c["finetune"]["tasks"][task] = {**(c["finetune"]["tasks"][task] or {}), "epochs": 3}

    counts = edited(tiny_run, more_epochs, "epochs")
    n = steps * seeds
    # The ablation's job re-runs too: it reads the re-trained nli fine-tunes of the final
    # checkpoint (see the learning-rate test above).
    assert task == "nli"
    assert counts == {"finetune": n, "evaluate": steps, "ablation": 1, "aggregate": 1,
                      "tables": 1, "figures": 1, "all": 1, "total": n + steps + 5}

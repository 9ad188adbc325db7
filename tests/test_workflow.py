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
    # One pre-training job and one manifest per checkpoint (adding a step runs its own).
    assert counts["pretrain"] == counts["checkpoints"] == n_steps + n_pop
    assert counts["tokenizer"] == 1  # one per vocabulary size, shared by the models


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


WORKFLOW = ("Snakefile", "workflow", "config", "profiles", "envs", "tests/config")
"""What a run of the workflow needs, copied into a test's own folder."""


def copy_workflow(dst: Path, extra: tuple[str, ...] = ()) -> Path:
    """`WORKFLOW` (and ``extra``) copied from the repository into ``dst``."""
    for item in (*WORKFLOW, *extra):
        src, target = ROOT / item, dst / item
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A copy of the workflow that ran the tiny config to the end."""
    work = copy_workflow(tmp_path_factory.mktemp("tiny"))
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


TIMED = ("pretrain_info.json", "finetune.json", "throughput.json", "info.json", ".pt",
         "gpu_hours.", "attribution.csv", "attribution.html")
"""Outputs that record how long their job took (or, for training states, pickle it)."""


def test_warm_jobs_compute_what_cold_jobs_compute(tiny_run, tmp_path):
    """The tiny study under `ckptsweep warm` (heavy jobs forked from one process that
    imported torch once) writes the same weights, predictions, scores, tables and figures,
    byte for byte, as the cold run; only the recorded job times differ."""
    work = copy_workflow(tmp_path)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([str(BIN / "ckptsweep"), "warm", "--", str(BIN / "snakemake"),
                           "--profile", "profiles/local", "--cores", "2", "--configfile",
                           "tests/config/tiny.yaml"], cwd=work, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    for rule in ("pretrain", "finetune", "evaluate", "attribute"):
        logs = list((work / "logs" / rule).rglob("*.log"))
        assert logs and all("ckptsweep warm: worker" in f.read_text() for f in logs), rule
    files = sorted(p.relative_to(work) for d in ("results", "resources")
                   for p in (work / d).rglob("*") if p.is_file())
    compared = [f for f in files if not any(t in f.name for t in TIMED)]
    assert any(f.suffix == ".safetensors" for f in compared)
    assert any(f.parts[:2] == ("results", "predictions") for f in compared)
    differ = [str(f) for f in compared if (work / f).read_bytes() != (tiny_run / f).read_bytes()]
    assert not differ, differ


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


@pytest.mark.parametrize("grow, expected", [
    # A checkpoint between the finished ones: its pre-training (from the nearest finished
    # state), manifest, fine-tunes and evaluation; no finished checkpoint's jobs.
    (lambda c: c["models"]["tiny"]["steps"].insert(1, 20),
     {"pretrain": 1, "checkpoints": 1, "finetune": 4, "evaluate": 1}),
    # A seed: its fine-tunes, and each checkpoint's evaluation (the finished variants come
    # back from the prediction cache) and the ablation, which reads the nli fine-tunes.
    (lambda c: c["finetune"]["tasks"]["nli"].update(seeds=[0, 1, 2]),
     {"finetune": 2, "evaluate": 2, "ablation": 1}),
    # An eval set: every evaluation of the models that score it; nothing is fine-tuned.
    (lambda c: c["datasets"].update(summ_ood={"task": "summarization", "schema": "xsum",
                                               "n_test": 8, "eval": {"of": "summ",
                                                                     "role": "ood"}}),
     {"prepare_data": 1, "evaluate": 2}),
])
def test_growing_the_grid_runs_only_the_new_cells(tiny_run, grow, expected):
    counts = edited(tiny_run, grow, "grown")
    aggregates = {"aggregate", "tables", "figures", "transfer_tables", "transfer_figures",
                  "attribution_table", "all", "total"}
    assert {k: v for k, v in counts.items() if k not in aggregates} == expected


def test_a_changed_setting_stops_a_real_run_before_any_job(tiny_run):
    """A config change that would redo finished fine-tunes is said in the dry run, with the
    jobs and the keys, and stops a real run before any job runs or any output is deleted;
    confirm_rerun lets it go on."""
    def more_epochs(c):
        c["finetune"]["tasks"]["nli"] = {**c["finetune"]["tasks"]["nli"], "epochs": 3}

    edited(tiny_run, more_epochs, "epochs3")
    config = "tests/config/epochs3.yaml"
    out = dry("--configfile", config, cwd=tiny_run)
    assert "would redo finished expensive jobs: 4 finetune, 2 evaluate, 1 ablation" in out
    assert "results/models/tiny/10/nli-lr1e-3-s0: its spec changed: epochs" in out
    model = tiny_run / "results/models/tiny/10/nli-lr1e-3-s0"
    before = {p: p.stat().st_mtime_ns for p in model.rglob("*")}
    real = snakemake("--cores", "1", "--configfile", config, cwd=tiny_run, check=False)
    assert real.returncode != 0
    assert "A real run stops here" in real.stdout + real.stderr
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*")} == before
    confirmed = dry("--configfile", config, "--config", "confirm_rerun=True", cwd=tiny_run)
    assert job_counts(confirmed)["finetune"] == 4


def test_the_batch_policy_reruns_nothing(tiny_run):
    """evaluation.batch_size is how a job runs, not what it computes (a resource, not in
    the spec): changing it on a finished study re-runs no evaluation or ablation."""
    cfg = yaml.safe_load((tiny_run / "tests/config/tiny.yaml").read_text())
    for policy in (3, "auto"):
        cfg["evaluation"]["batch_size"] = policy
        path = tiny_run / "tests/config/batch.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert "Nothing to be done" in dry("--configfile", str(path), cwd=tiny_run), policy


def test_the_advisor_runs_on_the_finished_grid(tiny_run):
    """An `advisor` block added to a finished study runs only its own jobs (the proxy and
    the bits per byte of each checkpoint, the advice) and writes its tables and figures."""
    import pandas as pd

    from ckptsweep.analysis.advisor_settings import ADVISOR_FIGURES, ADVISOR_TABLES

    cfg = yaml.safe_load((tiny_run / "tests/config/tiny.yaml").read_text())
    cfg["advisor"] = {"n_boot": 100, "bpb": True,
                      "proxy": {"data_fraction": 0.5, "steps_fraction": 0.5, "dev_size": 8}}
    path = tiny_run / "tests/config/advised.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts = job_counts(dry("--configfile", str(path), cwd=tiny_run))
    assert counts == {"proxy": 2, "bpb": 2, "proxy_scores": 1, "advise": 1, "all": 1,
                      "total": 7}
    snakemake("--profile", "profiles/local", "--cores", "2", "--configfile", str(path),
              cwd=tiny_run)
    for name in ADVISOR_TABLES:
        assert (tiny_run / f"results/tables/{name}.html").exists()
    for name in ADVISOR_FIGURES:
        assert (tiny_run / f"results/figures/{name}.svg").exists()
    pooled = pd.read_csv(tiny_run / "results/tables/predictors.csv")
    assert {"step", "proxy_finetune", "neg_bits_per_byte", "pre_accuracy"} <= set(
        pooled["predictor"])
    assert list((tiny_run / "benchmarks/proxy/tiny").glob("*.tsv"))
    assert "Nothing to be done" in dry("--configfile", str(path), cwd=tiny_run)


def test_reordering_the_config_reruns_nothing(tiny_run):
    """The order of models, tasks and datasets in the config is no change: every job's spec
    (the aggregation's list of runs included) is canonical, so nothing re-runs."""
    cfg = yaml.safe_load((tiny_run / "tests/config/tiny.yaml").read_text())
    for block in (cfg["models"], cfg["finetune"]["tasks"], cfg["datasets"]):
        items = list(block.items())[::-1]
        block.clear()
        block.update(items)
    path = tiny_run / "tests/config/reordered.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert "Nothing to be done" in dry("--configfile", str(path), cwd=tiny_run)

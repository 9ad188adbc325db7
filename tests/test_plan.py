"""`ckptsweep plan`: the cost of a study before it is submitted.

The throughput table says where every number comes from; shapes give the published
parameter counts; the plan's jobs are the dry run's; on the demo, from a clean checkout
(the repository's table only), it lands within a factor of 2 of the demo's measured
benchmarks on this machine; on the paper's config it prints without network, with the
profile's time limits and the paper's 1,067 A100-hours; finished jobs rescale it; and the
GPU-hours table and figure carry the plan beside the measurement.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from ckptsweep.cli import main
from ckptsweep.operate import plan as P
from ckptsweep.operate.throughput import Shape, embedded_shape, hub_shape, table
from ckptsweep.study.config import Study, load

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "tests/data/demo_benchmarks.json"
BENCHMARKED = {"world", "pretrain", "finetune", "evaluate", "ablation", "attribute",
               "transfer_tables", "transfer_figures", "proxy", "bpb"}
"""The rules with a ``benchmark:`` file: what a measured total covers."""


def study(path: str) -> Study:
    return Study.from_config(yaml.safe_load((ROOT / path).read_text()))


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(list(argv))
    return out.getvalue()


def test_every_table_entry_says_where_it_comes_from():
    t = table()
    for e in [*t["rates"], *t["jobs"]]:
        assert e["basis"] in ("measured", "derived", "published", "extrapolation"), e
        assert len(e.get("where", "")) > 20, e
        if e["basis"] in ("measured", "derived"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", str(e["when"])), e
        assert e["device"] in t["devices"], e
    for name, d in t["devices"].items():
        assert d["source"], name
    for name, s in t["shapes"].items():
        assert s["source"].startswith("published"), name
    for e in t["rates"]:  # no silent gaps: A100 numbers are extrapolations, said so
        if e["device"] == "A100":
            assert e["basis"] == "extrapolation", e


def test_shapes_give_the_published_parameter_counts(tiny_model, tiny_tokenizer):
    from ckptsweep.train.throughput import flop_params

    for repo, published in [("allenai/OLMo-1B-hf", 1_176_764_416),
                            ("meta-llama/Meta-Llama-3-8B", 8_030_261_248)]:
        s = hub_shape(repo)
        computed = Shape(s.name, s.layers, s.hidden, s.ffn, s.vocab, s.tied,
                         s.kv_hidden).params
        assert abs(computed / published - 1) < 0.001, (repo, computed)
    arch = {"layers": 1, "hidden": 32, "heads": 2, "ffn": 64, "max_position": 256}
    assert embedded_shape(arch, len(tiny_tokenizer)).flop_params == flop_params(tiny_model)


@pytest.mark.workflow
def test_the_plan_has_the_dry_runs_jobs(tmp_path):
    """The tiny config with the checkpoint advisor's block: its proxy and bits-per-byte
    jobs are planned too."""
    from tests.test_workflow import dry, job_counts

    cfg = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())
    cfg["advisor"] = {"bpb": True, "proxy": {"dev_size": 8}}
    path = tmp_path / "advised.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts = job_counts(dry("--forceall", "--configfile", str(path)))
    plan = P.build(Study.from_config(cfg), ROOT / "nothing-here", "profiles/local")
    mine = {r: v["jobs"] for r, v in P.by_rule(plan).items()}
    assert counts["proxy"] and counts["bpb"]
    for rule in ("finetune", "evaluate", "ablation", "prepare_data", "aggregate", "tables",
                 "figures", "transfer_tables", "transfer_figures", "proxy", "bpb"):
        assert mine.get(rule, 0) == counts.get(rule, 0), rule
    assert all(j.seconds > 0 for j in plan.jobs if j.rule in ("proxy", "bpb"))


def test_demo_plan_from_a_clean_checkout_is_within_2x_of_the_measured_demo(tmp_path):
    """Only the repository's table (tmp_path: no benchmarks/, no resources/data), against
    the demo runs measured on this machine (tests/data/demo_benchmarks.json)."""
    plan = P.build(study("config/demo.yaml"), tmp_path, "profiles/local")
    rules = P.by_rule(plan)
    runs = json.loads(MEASURED.read_text())["runs"]
    assert runs
    for run in runs:  # the rules that run measured (older demos had no advisor)
        assert set(run["seconds"]) <= BENCHMARKED, run["where"]
        planned = sum(r["hours"] for rule, r in rules.items() if rule in run["seconds"]) * 3600
        measured = sum(run["seconds"].values())
        assert 0.5 < planned / measured < 2, (run["where"], planned, measured)
    assert not plan.calibrated


def test_paper_plan_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    out = run_cli("plan", "--configfile", "config/config.yaml", "--directory", str(ROOT))
    assert "profile profiles/slurm" in out
    assert "The paper: 1,067 A100-hours" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalpha()}
    assert rows["finetune"][1:4] == ["44", "1/4", "A100"]
    assert rows["evaluate"][1:4] == ["9", "1", "A100"]
    assert "!! WARNING: 8 evaluate job(s) of olmo1b" in out  # 120 min is too short
    data = json.loads(run_cli("plan", "--configfile", "config/config.yaml", "--json"))
    assert data["total"]["jobs"] == sum(r["jobs"] for r in data["rules"].values())
    assert data["reference"]["gpu_hours"] == 1067


def test_runtime_comes_from_the_profile(tmp_path):
    paper = study("config/config.yaml")
    prof = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert P.resource(prof, "finetune", "runtime", attempt=2) == 480
    assert P.resource(prof, "prepare_data", "runtime") == 60  # default-resources
    over = {j.rule for j, _ in P.over_limit(P.build(paper, tmp_path, "profiles/slurm"))}
    assert "evaluate" in over
    prof["set-resources"]["evaluate"]["runtime"] = "100000 * 2 ** (attempt - 1)"
    (tmp_path / "p").mkdir()
    (tmp_path / "p/config.yaml").write_text(yaml.safe_dump(prof))
    over = {j.rule for j, _ in P.over_limit(P.build(paper, tmp_path, tmp_path / "p"))}
    assert "evaluate" not in over


def test_finished_jobs_rescale_their_rule(tmp_path):
    s = study("tests/config/tiny.yaml")
    clean = P.build(s, tmp_path, "profiles/local")
    job = next(j for j in clean.jobs if j.rule == "finetune" and j.model == "tiny")
    bench = tmp_path / "benchmarks/finetune" / f"{job.wildcards}.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text(f"s\th:m:s\n{job.seconds * 3:.3f}\t0:00:01\n")
    plan = P.build(s, tmp_path, "profiles/local")
    again = {j.wildcards: j for j in plan.jobs if j.rule == "finetune"}
    assert again[job.wildcards].seconds == pytest.approx(job.seconds * 3, rel=1e-4)
    assert plan.calibrated == {"finetune tiny": "1 jobs, x3.00"}, plan.calibrated
    assert "benchmarks/" in next(iter(again[job.wildcards].rates.values()))
    other = next(j for j in clean.jobs if j.rule == "finetune" and j.model != "tiny")
    assert again[other.wildcards].seconds == pytest.approx(other.seconds)  # other shapes


def test_gpu_hours_table_and_figure_carry_the_plan(tmp_path):
    from ckptsweep.analysis.cost import gpu_hours
    from ckptsweep.analysis.cost_figure import fig_gpu_hours
    from ckptsweep.analysis.figures import _no_data, _save

    cfg = load(yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text()))
    planned = P.planned_by_rule(cfg, tmp_path)
    assert set(planned) >= {"pretrain", "finetune", "evaluate"}
    assert planned["finetune"]["jobs"] == 8  # tiny's 4 fine-tunes x 2 steps (analysis.models)
    bench = tmp_path / "benchmarks/finetune/tiny/10/nli-lr1e-3-s0.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n36.0\t0:00:36\t500\t30\n")
    df = gpu_hours(tmp_path / "benchmarks", cfg["analysis"]["gpus_per_job"],
                   cfg["analysis"]["models"], {}, planned)
    assert list(df.columns[-3:]) == ["planned_jobs", "planned_hours", "planned_gpu_hours"]
    row = df.set_index("rule").loc["finetune"]
    assert row["gpu_hours"] == pytest.approx(0.01)
    assert row["planned_gpu_hours"] == pytest.approx(planned["finetune"]["gpu_hours"])
    assert df.set_index("rule").loc["evaluate", "jobs"] == 0  # planned, not run yet
    total = df.set_index("rule").loc["total"]
    assert total["planned_gpu_hours"] == pytest.approx(
        df[df["rule"] != "total"]["planned_gpu_hours"].sum())
    paths = fig_gpu_hours(df, tmp_path, _save, _no_data)
    assert [p.name for p in paths] == ["gpu_hours.png", "gpu_hours.svg"]

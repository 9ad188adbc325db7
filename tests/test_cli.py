"""The command line: bad input gets a clear error naming the culprit."""

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "ckptsweep"


def run(*args):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True)


def test_help_lists_the_verbs():
    out = run("--help").stdout
    for verb in ("world", "prepare", "pretrain", "checkpoints", "finetune", "evaluate", "tables"):
        assert verb in out


def test_bad_spec_json_is_named():
    proc = run("world", "--spec", "{not json", "--out", "x")
    assert proc.returncode != 0 and "--spec is not valid JSON" in proc.stderr


def test_unknown_world_key_is_named(tmp_path):
    proc = run("world", "--spec", json.dumps({"n_peple": 3}), "--out", str(tmp_path))
    assert proc.returncode != 0
    assert "world.n_peple: unknown key(s) ['n_peple']" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_missing_checkpoint_is_named(tmp_path):
    proc = run("checkpoints", "--pretrained", str(tmp_path), "--steps", "5",
               "--out", str(tmp_path / "m.tsv"))
    assert proc.returncode != 0 and "no checkpoint for step 5" in proc.stderr
    assert not (tmp_path / "m.tsv").exists()


def test_check_names_the_line_of_a_yaml_error_and_the_key_of_a_bad_value(tmp_path):
    """Snakemake says only 'not valid JSON or YAML'; `ckptsweep check` says where."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nmodels:\n  tiny: {source: pretrain\n   steps: [1]\n")
    proc = run("check", "--configfile", str(bad))
    assert proc.returncode != 0 and f"{bad}:4:9: not valid YAML" in proc.stderr
    demo = (Path(__file__).resolve().parents[1] / "config/demo.yaml").read_text()
    bad.write_text(demo.replace("steps: [50, 300, 600, 1000]", "steps: [50, 300, 600, 5000]"))
    proc = run("check", "--configfile", str(bad))
    assert proc.returncode != 0
    assert "models.tiny.steps[3]: step 5000 is beyond models.tiny.pretrain.steps" in proc.stderr

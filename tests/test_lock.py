"""requirements.lock, pyproject.toml and envs/*.yaml agree (`tools/lock.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
_spec = importlib.util.spec_from_file_location("lock", ROOT / "tools" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def test_lock_pyproject_and_envs_agree():
    assert lock.problems(LOCK) == []


def test_lock_pins_everything_the_project_names():
    pins = lock.read_lock(LOCK)
    for name in ("torch", "transformers", "datasets", "snakemake", "pip", "setuptools"):
        assert name in pins, name
    assert pins["torch"].startswith("2.13."), "CI installs the CPU build of torch 2.13"


def test_a_disagreement_is_reported(tmp_path):
    """The check can fail: a lock that pins a version outside pyproject's range, misses a
    dependency, or differs from an env file's pin is reported by name."""
    text = LOCK.read_text()
    bad = tmp_path / "requirements.lock"
    bad.write_text(text.replace("\ntransformers==", "\ntransformers==4.57.0\n#")
                   .replace("\nbm25s==", "\n#bm25s=="))
    found = "\n".join(lock.problems(bad))
    assert "requires transformers<6,>=5.24 but requirements.lock pins 4.57.0" in found
    assert "has no bm25s" in found
    assert "envs/eval.yaml pins transformers==" in found


def test_lock_lines_are_checked(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text("torch==2.13.0\ntorch==2.13.1\n")
    with pytest.raises(ValueError, match=r"requirements.lock:2: torch is pinned twice"):
        lock.read_lock(bad)
    bad.write_text("torch>=2.13\n")
    with pytest.raises(ValueError, match=r"requirements.lock:1: expected 'name==version'"):
        lock.read_lock(bad)

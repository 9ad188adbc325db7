"""The typed study config (`ckptsweep.study.config`): one default per key, the schema's
equal to the dataclasses', validation that fills defaults as Snakemake does, and job specs
assembled in the package."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from ckptsweep.study import specs
from ckptsweep.study.config import SCHEMA, Study, load

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["config/demo.yaml", "config/config.yaml", "tests/config/tiny.yaml",
           "config/demo_adaptive.yaml",
           "config/transfer_datadecide.yaml"]


def schema_defaults() -> list[tuple[list[str], object]]:
    """(key path, default) of every ``default:`` in the schema; ``*`` stands for any name
    of a mapping of blocks (a model, a dataset)."""
    out = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if "default" in node:
            out.append((path, node["default"]))
        for key, sub in node.get("properties", {}).items():
            walk(sub, [*path, key])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], [*path, "*"])

    walk(yaml.safe_load(SCHEMA.read_text()), [])
    return out


def typed_default(path: list[str]):
    """The default of the typed field at ``path``, following the dataclasses' hints."""
    cls = Study
    for i, key in enumerate(path):
        if key == "*":
            continue
        hints = typing.get_type_hints(cls)
        field = {f.name: f for f in dataclasses.fields(cls)}[key]
        if i == len(path) - 1:
            if field.default is not dataclasses.MISSING:
                return field.default
            assert field.default_factory is not dataclasses.MISSING, ".".join(path)
            return field.default_factory()
        hint = hints[key]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (Mapping, dict) or (args and typing.get_origin(args[0])
                                                          in (Mapping, dict)):
            hint = typing.get_args(args[0] if typing.get_origin(hint) not in (Mapping, dict)
                                   else hint)[1]
        elif args:
            hint = args[0]
        cls = hint
    raise AssertionError(path)


def plain(value):
    """Lists and tuples alike, for comparing a YAML default with a dataclass default."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def test_every_schema_default_is_the_typed_default():
    found = schema_defaults()
    assert len(found) > 40, "the schema walk found almost no defaults"
    wrong = [(".".join(p), d, typed_default(p)) for p, d in found
             if plain(typed_default(p)) != plain(d)]
    assert not wrong, "schema default != dataclass default:\n" + "\n".join(map(str, wrong))


def test_the_walk_reaches_every_kind_of_field():
    """Top-level, a stage's config dataclass, a mapping of blocks, a nested block."""
    assert typed_default(["threads"]) == 1
    assert typed_default(["evaluation", "seed"]) == 1234
    assert typed_default(["models", "*", "trust_remote_code"]) is False
    assert typed_default(["datasets", "*", "eval", "formats"]) == ("default",)
    assert typed_default(["attribution", "finetune", "lr"]) == 2e-3


@pytest.mark.parametrize("name", CONFIGS)
def test_defaults_are_filled_as_snakemake_fills_them(name):
    """The package's validation leaves exactly the config Snakemake's validate leaves, so
    the specs built in tests are the ones a run uses."""
    from snakemake.utils import validate

    raw = yaml.safe_load((ROOT / name).read_text())
    theirs = copy.deepcopy(raw)
    validate(theirs, str(SCHEMA))
    assert load(raw) == theirs
    assert raw == yaml.safe_load((ROOT / name).read_text()), "load must not mutate its input"


def test_a_typed_study_reads_like_its_config():
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    study = Study.from_config(raw)
    assert study.models["tiny"].steps == tuple(raw["models"]["tiny"]["steps"])
    assert study.evaluation.batch_size == raw["evaluation"]["batch_size"]
    assert study.evaluation.shots == tuple(raw["evaluation"]["shots"])
    assert study.datasets["nli"].source == "world"
    assert study.analysis.ablation.methods == ("free", "constrained", "tokenprob", "loglik")
    assert study.attribution.tracin.projection_dim == 4096
    assert study.attribution.candidates.random == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.threads = 4


def test_specs_pass_blocks_on_as_written():
    """A spec never gains a default the config does not hold: an attribution block
    without a tracin sub-block passes {} (the job fills the defaults), as before."""
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    del raw["attribution"]["tracin"]
    study = Study.from_config(raw)
    assert '"tracin": {}' in specs.attribution(study, "tiny", "finetune")
    assert study.attribution.tracin.projection_dim == 0  # the typed view has the default
    spec = specs.finetune(study, "tiny", "nli-lr2e-3-s0")
    assert '"mem_mb"' not in spec and '"seeds"' not in spec and '"lr": 0.002' in spec

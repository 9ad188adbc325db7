"""Every check a job makes on a config value has a parse-time twin.

A job that fails on a config value has already cost its scheduling, and Snakemake deletes
the outputs of a job that fails: a finished pre-training, say. So every job-side config
check raises `ConfigError` (carrying the key), and this test finds each such raise in the
package by itself (an AST scan) and proves, with a config that would trip it, that the
parse-time checks (`ckptsweep.study.config.load` and `ckptsweep.study.checks.check`)
refuse that config first, naming the key as the user wrote it. A new job-side check
without a witness here fails the test.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest
import yaml

from ckptsweep.errors import ConfigError
from ckptsweep.study.checks import check
from ckptsweep.study.config import Study

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "ckptsweep"
DEMO = yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def job_side_checks() -> dict[str, list[str]]:
    """Key pattern (``*`` for a formatted part) -> where each ``raise ConfigError(key, ...)``
    stands, outside the parse-time study layer."""
    found: dict[str, list[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        if "study" in path.relative_to(PKG).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and getattr(node.exc.func, "id", None) == "ConfigError"):
                continue
            key = node.exc.args[0]
            if isinstance(key, ast.Constant):
                pattern = key.value
            elif isinstance(key, ast.JoinedStr):
                pattern = "".join(v.value if isinstance(v, ast.Constant) else "*"
                                  for v in key.values)
            else:
                pattern = "*"
            found.setdefault(pattern, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _set(*path, value):
    def edit(c):
        node = c
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit


# job-side key pattern -> [(a config edit that trips that check, the key parse time names)]
WITNESSES = {
    "evaluation.dtype": [(_set("evaluation", "dtype", value="float16"), r"evaluation\.dtype")],
    "evaluation.method": [(_set("evaluation", "method", value="vote"), r"evaluation\.method")],
    "evaluation.prefix_sharing": [(_set("evaluation", "prefix_sharing", value="all"),
                                   r"evaluation\.prefix_sharing")],
    "evaluation.shots": [(_set("evaluation", "shots", value=[-1]), r"evaluation\.shots\[0\]")],
    "datasets.*.eval": [(_set("datasets", "instruct", "eval", value={"role": "benchmark"}),
                         r"datasets\.instruct\.eval")],
    "datasets.*.eval.formats": [(_set("datasets", "arc_who", "eval", "formats", value=["io"]),
                                 r"datasets\.arc_who\.eval\.formats")],
    "datasets.*.eval.answer_words": [
        (_set("datasets", "para", "eval", "answer_words", value={"nli": {"yes": ["x"]}}),
         r"datasets\.para\.eval\.answer_words"),
        (lambda c: (_set("evaluation", "method", value="free")(c),
                    _set("datasets", "para", "eval", "answer_words",
                         value={"nli": {"yes": ["entailment"], "no": ["neutral"]}})(c)),
         r"datasets\.para\.eval\.answer_words")],
    "analysis.ablation.methods": [(_set("analysis", "ablation", "methods", value=["vote"]),
                                   r"analysis\.ablation\.methods\[0\]")],
    "world.*": [(_set("world", "n_people", value=2), r"world\.n_people"),
                (_set("world", "negation_p", value=1.5), r"world\.negation_p")],
    "world.doc_weights": [(_set("world", "doc_weights", value={"bio": 0}), r"world\.doc_weights")],
    "attribution.finetune.facts_per_doc": [(_set("attribution", "finetune", "facts_per_doc",
                                                 value=9),
                                            r"attribution\.finetune\.facts_per_doc")],
    "attribution.finetune.people": [(_set("attribution", "finetune", "people", value=5000),
                                     r"attribution\.finetune\.people")],
    "attribution.slices": [(_set("attribution", "slices", value=["queries"]),
                            r"attribution\.slices\[0\]")],
    "finetune.sharding": [(_set("finetune", "defaults", "sharding", value="zero1"),
                           r"finetune\.defaults\.sharding")],
    "datasets.*.options": [(_set("datasets", "para", "options", value={"threshold": 3}),
                            r"datasets\.para\.options")],
    "datasets.*.task": [(_set("datasets", "para", "task", value="nli"), r"datasets\.para\.task")],
    "analysis.groups.*[*].eval": [(_set("analysis", "groups", "finetuning",
                                        value=[{"eval": "arc_who", "train": "nli"}]),
                                   r"analysis\.groups\.finetuning\[0\]\.eval")],
    # The AMURO & CHAR import's settings file (`ckptsweep tables --analysis`) may group
    # pairs by direction; a workflow config has no such key, and the schema says so.
    "*[*].eval": [(_set("analysis", "cross_task", value={}),
                   r"analysis\.cross_task: unknown key")],
    "*[*]": [(_set("analysis", "cross_task", value={}), r"analysis\.cross_task: unknown key")],
    "*.steps": [(lambda c: c["models"]["tiny"]["steps"].append(5000),
                 r"models\.tiny\.steps\[4\]: step 5000 is beyond")],
    "*.pretrain.mixture": [(_set("models", "pop_bio_s", "pretrain", "mixture", value={"bio": 0}),
                            r"models\.pop_bio_s\.pretrain\.mixture"),
                           (lambda c: (_set("world", "doc_weights", value={"bio": 1.0})(c)),
                            r"models\.pop_bio_s\.pretrain\.mixture: .* gives \['bio_attr_q'")],
    "evaluation.batch_size": [(_set("evaluation", "batch_size", value=0),
                               r"evaluation\.batch_size")],
    # The checkpoint advisor's settings (`AdvisorSettings.from_block`, read by the advise
    # rules and `ckptsweep advise`) and its proxy job's dev slice.
    "advisor.*": [(_set("advisor", "epsilonn", value=0.1), r"advisor\.epsilonn: unknown key")],
    "advisor.epsilon": [(_set("advisor", "epsilon", value=-0.01), r"advisor\.epsilon")],
    "advisor.alpha": [(_set("advisor", "alpha", value=0.5), r"advisor\.alpha")],
    "advisor.proxy.dev_size": [(_set("advisor", "proxy", "dev_size", value=1599),
                                r"advisor\.proxy\.dev_size: 1599 of the 1600")],
    # `errors.build`: a spec block with a key its dataclass lacks. The schema lists each
    # block's keys (additionalProperties: false); test_spec_blocks_hold_only_known_keys
    # holds those lists against the dataclasses.
    "*.*": [(_set("world", "n_peple", value=3), r"world\.n_peple: unknown key"),
            (_set("finetune", "defaults", "lr_decay", value=0.5),
             r"finetune\.defaults\.lr_decay: unknown key")],
}


def test_every_job_side_check_has_a_witness():
    found = job_side_checks()
    assert len(found) >= 15, "the scan found almost no job-side checks"
    missing = {k: v for k, v in found.items() if k not in WITNESSES}
    assert not missing, ("job-side config checks without a parse-time twin in this test's "
                         f"WITNESSES: {missing}")
    stale = sorted(set(WITNESSES) - set(found))
    assert not stale, f"witnesses for checks that no longer exist: {stale}"


@pytest.mark.parametrize("pattern, case", [(k, i) for k, cases in WITNESSES.items()
                                           for i in range(len(cases))])
def test_parse_time_refuses_what_a_job_would(pattern, case):
    edit, key = WITNESSES[pattern][case]
    cfg = copy.deepcopy(DEMO)
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        check(Study.from_config(cfg))
    assert re.match(key, str(err.value)), f"{pattern}: parse time said {err.value}"


def test_the_demo_passes_every_twin():
    check(Study.from_config(copy.deepcopy(DEMO)))


def test_spec_blocks_hold_only_known_keys():
    """The blocks a job builds a dataclass from (`errors.build`) list in the schema only
    keys that dataclass has, so `build` never meets an unknown key the schema let through."""
    from dataclasses import fields

    from ckptsweep.data.world.config import WorldConfig
    from ckptsweep.evaluate.config import EvalConfig
    from ckptsweep.train.config import FinetuneConfig
    from ckptsweep.train.pretrain import PretrainConfig

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    blocks = {
        "world": (schema["properties"]["world"], WorldConfig, set()),
        "evaluation": (schema["properties"]["evaluation"], EvalConfig, set()),
        "pretrain": (schema["properties"]["models"]["additionalProperties"]["properties"]
                     ["pretrain"], PretrainConfig, set()),
        # lr, seeds and mem_mb are the study's: the spec holds one lr, one seed, no mem_mb.
        "finetune": (schema["$defs"]["ft_settings"], FinetuneConfig, {"lr", "seeds", "mem_mb"}),
    }
    for name, (block, cls, study_only) in blocks.items():
        assert block.get("additionalProperties") is False, name
        extra = set(block["properties"]) - {f.name for f in fields(cls)} - study_only
        assert not extra, f"schema {name} keys that {cls.__name__} does not take: {extra}"

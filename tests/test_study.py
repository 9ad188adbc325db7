"""The study grid and the config's cross-reference checks."""

import copy
from pathlib import Path

import pytest
import yaml

from ckptsweep.errors import ConfigError
from ckptsweep.study import checks
from ckptsweep.study import grid as study
from ckptsweep.study.config import Study, load

ROOT = Path(__file__).resolve().parents[1]


def demo():
    return yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def test_lr_names_are_short_and_unique():
    assert study.fmt_lr(2e-6) == "2e-6"
    assert study.fmt_lr(1e-3) == "1e-3"
    assert study.fmt_lr(2.5e-7) == "2.5e-7"
    assert study.ft_name("mnli", 2e-6, 0) == "mnli-lr2e-6-s0"


def typed(cfg: dict) -> Study:
    return Study.from_config(cfg)


def test_demo_grid():
    cfg = typed(demo())
    checks.check(cfg)
    names = [f.name for f in study.finetunes(cfg)]
    assert len(names) == len(set(names))
    assert sorted(names) == [f"{t}-lr2e-3-s0" for t in ("instruct", "nli", "para", "qg",
                                                          "summ")]
    assert study.variants(cfg)[0] == "base"
    sets = study.eval_sets(cfg)
    assert sets["nli"]["formats"] == ["default", "io", "instruct"]
    assert sets["nli_ood"]["formats"] == ["default"]
    assert "instruct" not in sets


def test_seed_and_lr_lists_multiply_the_grid():
    cfg = demo()
    cfg["finetune"]["tasks"]["summ"] = {"lr": [1e-3, 3e-4], "seeds": [0, 1, 2]}
    names = [f.name for f in study.finetunes(typed(cfg)) if f.dataset == "summ"]
    assert len(names) == 6 and "summ-lr3e-4-s2" in names


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["finetune"]["tasks"].update(nope={}), "finetune.tasks.nope"),
    (lambda c: c["datasets"]["nli_ood"]["eval"].update(of="nope"), "datasets.nli_ood.eval.of"),
    (lambda c: c["datasets"]["arc_who"]["eval"].update(formats=["io"]),
     "datasets.arc_who.eval.formats"),
    (lambda c: c["finetune"]["tasks"].update(arc_who={}), "finetune.tasks.arc_who"),
    (lambda c: c["analysis"]["groups"]["finetuning"].append({"eval": "x", "train": "nli"}),
     r"analysis.groups.finetuning\[4\].eval"),
    (lambda c: c["datasets"]["para"]["eval"].update(
        answer_words={"nli": {"yes": ["entailment"], "maybe": ["neutral"]}}),
     r"datasets.para.eval.answer_words.nli: needs exactly the set's labels \['no', 'yes'\]"),
])
def test_cross_reference_errors_name_the_key(edit, message):
    cfg = copy.deepcopy(demo())
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        checks.check(typed(cfg))


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["datasets"].update({"bad name": c["datasets"]["nli"]}),
     "datasets: 'bad name' is not a plain identifier"),
    (lambda c: c["datasets"]["nli"].update(task="sentiment"), "datasets.nli.task"),
    (lambda c: c.pop("finetune"), "finetune"),
    (lambda c: c["models"]["tiny"].update(steps=["$(rm -rf /)"]), r"models.tiny.steps\[0\]"),
    (lambda c: c["finetune"]["tasks"].update(nli={"lr": [1e-3], "epocs": 2}),
     r"finetune.tasks.nli.epocs: unknown key"),
    (lambda c: c["finetune"]["tasks"].update(nli={"lr": ["fast"]}),
     r"finetune.tasks.nli.lr\[0\]: 'fast' is not of type 'number'"),
])
def test_schema_errors_name_the_key(edit, key):
    """Inside the oneOf of finetune.tasks entries too, the key and the reason are named."""
    cfg = copy.deepcopy(demo())
    edit(cfg)
    with pytest.raises(ConfigError, match=f"^{key}"):
        load(cfg)


def test_fine_tunes_get_extra_formats_only_on_their_own_in_domain_set():
    cfg = typed(demo())
    base = study.eval_plan(cfg, "base")
    assert base["nli"] == base["para"] == ["default", "io", "instruct"]
    assert set(base) == set(study.eval_sets(cfg))
    ft = study.eval_plan(cfg, "nli-lr2e-3-s0")
    assert ft["nli"] == ["default", "io", "instruct"]
    assert ft["para"] == ft["nli_ood"] == ft["summ"] == ["default"]
    # Task fine-tunes skip the benchmarks; the instruction-tuned model gets only them.
    benchmarks = {n for n, s in study.eval_sets(cfg).items() if s["role_in"] == "benchmark"}
    assert benchmarks and not benchmarks & set(ft)
    assert set(study.eval_plan(cfg, "instruct-lr2e-3-s0")) == benchmarks


def test_a_model_block_can_restrict_its_finetunes():
    raw = demo()
    raw["models"]["tiny"]["finetune"] = ["summ"]
    cfg = typed(raw)
    assert {f.dataset for f in study.finetunes(cfg, "tiny")} == {"summ"}
    assert study.variants(cfg, "tiny") == ["base", "summ-lr2e-3-s0"]
    # Without a model, the whole finetune.tasks block (names are unique across models).
    assert len(study.finetunes(cfg)) == len(study.finetunes(typed(demo())))
    plan = study.ablation(cfg, "tiny")
    assert [v["name"] for v in plan["variants"]] == ["base"]
    raw["models"]["tiny"]["finetune"] = ["nope"]
    with pytest.raises(ConfigError, match=r"models\.tiny\.finetune: 'nope'"):
        checks.check(typed(raw))

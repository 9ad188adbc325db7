"""The study config, typed: after schema validation, one frozen dataclass tree.

`load` validates a config against ``workflow/schemas/config.schema.yaml`` and fills the
schema's defaults exactly as Snakemake's ``validate`` does (so a job spec built in a test
is the one a dry run shows), naming the bad key on error; `Study.from_config` then builds
the typed tree. Every default of a config key lives once, here or in the stage's own
config dataclass that a block maps onto (``evaluation`` -> `EvalConfig`,
``attribution.finetune`` -> `FactFinetuneConfig`); ``tests/test_study_config.py`` checks
the schema's ``default:`` values against them.

The typed tree is for decisions made at parse time (the grid, checks, resources). Job
specs pass some blocks on as written (``evaluation``, a fine-tune's settings, ``world``,
a model's ``pretrain``), so `Study.raw` keeps the validated dict for them: a spec never
gains a default that the config did not hold.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ckptsweep.analysis.advisor_settings import AdvisorSettings
from ckptsweep.analysis.settings import ALPHA, N_BOOT, AnalysisSettings
from ckptsweep.attribution.config import AttributionSettings
from ckptsweep.errors import ConfigError
from ckptsweep.evaluate.config import EvalConfig, ProxyConfig

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
"""The config's JSON schema (in the workflow, where Snakemake's catalog keeps it)."""
MEM_MB_PER_PROCESS = 32000
"""Host memory (MB) per process of a fine-tune without a ``mem_mb`` setting."""


# ------------------------------------------------------------------------ validation

def _key(path) -> str:
    """``["models", "tiny", "steps", 3]`` -> ``models.tiny.steps[3]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(error) -> ConfigError:
    """The one most telling problem behind a jsonschema error, as a ConfigError naming
    the key as the user wrote it (inside ``oneOf`` too: the branch that came closest)."""
    from jsonschema.exceptions import best_match

    if error.validator in ("oneOf", "anyOf") and error.context:
        # A value that matches none of the branches: explain the branch that fits best,
        # unless the value fits none of their types at all.
        inner = best_match(error.context)
        if inner.validator != "type" or len(inner.absolute_path) > len(error.absolute_path):
            return _explain(inner)
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; known keys: {allowed}" if allowed else ""
        return ConfigError(_key([*path, extra[0]]), f"unknown key{hint}")
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return ConfigError(_key([*path, missing]), "required key missing")
    if error.validator == "enum":
        return ConfigError(_key(path), f"{error.instance!r} is not one of {error.validator_value}")
    if error.validator == "pattern" and error.validator_value == "^[A-Za-z][A-Za-z0-9_]*$":
        return ConfigError(_key(path), f"{error.instance!r} is not a plain identifier "
                                        "(a letter, then letters, digits or _)")
    if error.validator == "propertyNames":
        return ConfigError(_key([*path, error.instance]) if isinstance(error.instance, str)
                           else _key(path), error.message)
    return ConfigError(_key(path), error.message)


def load(config: Mapping, schema: str | Path = SCHEMA) -> dict:
    """A deep copy of ``config``, validated, with the schema's defaults filled in wherever
    its ``properties`` are checked (Snakemake's ``validate(..., set_default=True)``); a
    `ConfigError` names the first bad key."""
    import jsonschema
    import yaml
    from jsonschema import validators
    from jsonschema.exceptions import best_match

    schema = yaml.safe_load(Path(schema).read_text())
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    filling = validators.extend(base, {"properties": set_defaults})
    data = copy.deepcopy(dict(config))
    error = best_match(filling(schema).iter_errors(data))
    if error is not None:
        raise _explain(error)
    return data


# --------------------------------------------------------------------- the typed tree

def _build(cls, data: Mapping | None, **typed):
    """``cls`` from a config block: its keys by name, ``typed`` for nested blocks."""
    if data is None:
        return None
    names = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in data.items() if k in names}, **typed})


@dataclass(frozen=True)
class EvalRole:
    """``datasets.<d>.eval``: the dataset is evaluated, in this role."""

    of: str | None = None
    """The training dataset this set is in-domain or OOD for."""
    role: str | None = None
    """``id`` (in-domain), ``ood`` or ``benchmark``."""
    formats: tuple[str, ...] = ("default",)
    """Prompt formats evaluated (the paper's Table 4)."""
    answer_words: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)
    """Task type of a fine-tune -> this set's label -> the words it is scored as."""


@dataclass(frozen=True)
class Dataset:
    """``datasets.<d>``: one dataset (its id is also its eval-set id)."""

    task: str
    """Task type (``ckptsweep.data.tasks``): fixes prompts and scoring."""
    schema: str
    """Record schema of the raw data: which adapter converts it."""
    source: str = "world"
    """``world`` (generated by the synthetic world) or ``hub``."""
    hub: Mapping | None = None
    """Where a hub dataset lives: path, name, revision, splits."""
    options: Mapping | None = None
    """Adapter options (stsb: threshold)."""
    train_fraction: float | None = None
    """Fraction of the training split kept (exclusive with ``n_train``)."""
    n_train: int | None = None
    """Training examples kept (seeded sample)."""
    n_test: int | None = None
    """Evaluation examples kept (seeded sample)."""
    eval: EvalRole | None = None
    """Present if the dataset is evaluated."""


@dataclass(frozen=True)
class Model:
    """``models.<m>``: one model family whose checkpoints are studied."""

    source: str
    """``pretrain`` (a tiny OLMo pre-trained here) or ``hub`` (released checkpoints)."""
    steps: tuple[int, ...]
    """Pre-training steps whose checkpoints are fine-tuned and evaluated."""
    repo: str | None = None
    """hub: the repo whose branches are the checkpoints."""
    refs: Mapping[int, str] = field(default_factory=dict)
    """hub: step -> an explicit branch."""
    repos: Mapping[int, str] = field(default_factory=dict)
    """hub: step -> a repo of its own."""
    branch_pattern: str | None = None
    """hub: regular expression parsing a branch name (default: the revisions module's)."""
    tokens_per_step: int | None = None
    """hub: tokens per optimizer step, where a branch name carries no token count."""
    trust_remote_code: bool = False
    """Let transformers run the repo's own Python code."""
    finetune_settings: Mapping[str, Any] = field(default_factory=dict)
    """This model's fine-tuning settings, over ``finetune.defaults`` and the task's."""
    eval_sets: tuple[str, ...] | None = None
    """Eval sets this model's variants are evaluated on (None: every set of their plan)."""
    finetune: tuple[str, ...] | None = None
    """Training datasets this model is fine-tuned on (None: every ``finetune.tasks``)."""
    pretrain: Mapping[str, Any] | None = None
    """Architecture and budget of a tiny model (``PretrainConfig``'s keys)."""
    threads: int | None = None
    """Torch threads of this model's pre-training (None: the top-level ``threads``)."""
    tokenizer: Mapping[str, Any] = field(default_factory=dict)
    """Byte-level BPE tokenizer settings (vocab_size)."""


@dataclass(frozen=True)
class FinetuneBlock:
    """``finetune``: the fine-tunes made at every checkpoint."""

    defaults: Mapping[str, Any]
    """Settings of every fine-tune unless its task or model overrides them."""
    tasks: Mapping[str, Mapping[str, Any]]
    """Training dataset -> its own settings (empty: the defaults)."""


@dataclass(frozen=True)
class TransferModel:
    """``transfer.models.<m>``: a population model with its labels."""

    mixture: str | float
    """Pre-training data mixture label."""
    scale: str | float
    """Model scale label."""
    steps: tuple[int, ...] | None = None
    """Checkpoints that are members (None: every ``models.<m>.steps``)."""


@dataclass(frozen=True)
class Transfer:
    """``transfer``: the cross-stage transfer analysis (Fan et al. 2026)."""

    sft: str
    """``finetune.tasks`` entry that is the SFT stage."""
    categories: Mapping[str, tuple[str, ...]]
    """Capability category -> its benchmarks."""
    models: Mapping[str, TransferModel]
    """Population models with their labels."""
    scales: tuple[str | float, ...] | None = None
    """Scale labels smallest first (None: order of first appearance)."""
    shots: int | None = None
    """Shot count compared (None: ``analysis.shots``, else the smallest evaluated)."""
    format: str = "default"
    """Prompt format compared."""
    ece_bins: int = 10
    """Equal-width confidence bins of the ECE and the reliability diagrams."""
    n_boot: int = N_BOOT
    """Bootstrap resamples (of members, and of examples)."""
    seed: int = 0
    """Bootstrap seed."""
    alpha: float = ALPHA
    """Intervals are 1 - alpha percentile intervals."""
    min_members: int = 3
    """Fewest members a scale may have."""


@dataclass(frozen=True)
class AdaptiveBlock:
    """``advisor.adaptive``: the adaptive sweep (``advisor.mode: adaptive``)."""

    k: int = 1
    """Checkpoints fine-tuned besides the last: the k the predictor ranks best."""
    predictor: str = "proxy_finetune"
    """The predictor that ranks the checkpoints before any full fine-tune."""
    full_grid: str | None = None
    """A finished full study's working directory (relative to this one's, or absolute):
    its ``benchmarks/`` price the full grid and its ``results/scores.parquet`` gives the
    regret against the full grid's best (None: the cost plan of this config's full grid,
    `ckptsweep.operate.plan`, and no regret against it)."""


@dataclass(frozen=True)
class AdvisorBlock(AdvisorSettings):
    """``advisor``: the checkpoint advisor (`AdvisorSettings`, whose keys it holds too)
    with how it runs."""

    mode: str = "retrospective"
    """``retrospective``: advice and validated predictors on the finished full grid;
    ``adaptive``: the predictor first, then full fine-tunes of its top k and the last."""
    proxy: ProxyConfig | None = None
    """The proxy fine-tune predictor; None: not run."""
    bpb: bool = False
    """Run the base-only bits-per-byte job on the generation sets (its predictor)."""
    adaptive: AdaptiveBlock | None = None
    """The adaptive sweep's settings (None: the defaults, in adaptive mode)."""

    @classmethod
    def from_config(cls, block: Mapping | None) -> AdvisorBlock | None:
        """The typed block (None without one): the settings through
        `AdvisorSettings.from_block`, which refuses what a job would refuse."""
        if block is None:
            return None
        rest = {k: v for k, v in block.items() if k not in ("mode", "proxy", "adaptive", "bpb")}
        settings = AdvisorSettings.from_block(rest)
        proxy = block.get("proxy")
        return cls(**{f.name: getattr(settings, f.name) for f in fields(AdvisorSettings)},
                   mode=block.get("mode", cls.mode), bpb=block.get("bpb", cls.bpb),
                   proxy=_build(ProxyConfig, proxy, **_tuples(proxy, "tasks", "formats")),
                   adaptive=_build(AdaptiveBlock, block.get("adaptive")))


@dataclass(frozen=True)
class Study:
    """A validated study config, typed. Fields are named as the config's keys."""

    study: str
    """Name of the study."""
    models: Mapping[str, Model]
    """Model families by name."""
    datasets: Mapping[str, Dataset]
    """Datasets by id."""
    finetune: FinetuneBlock
    """The fine-tunes of every checkpoint."""
    evaluation: EvalConfig
    """How every variant is evaluated."""
    analysis: AnalysisSettings
    """The AMURO & CHAR analysis."""
    threads: int = 1
    """Torch threads per job."""
    confirm_rerun: bool = False
    """Let a real run redo finished expensive jobs whose settings changed."""
    world: Mapping[str, Any] | None = None
    """The synthetic world's settings (``WorldConfig``'s keys); None: no world."""
    transfer: Transfer | None = None
    """The cross-stage transfer analysis; None: not run."""
    attribution: AttributionSettings | None = None
    """Fact tracing; None: not run."""
    advisor: AdvisorBlock | None = None
    """The checkpoint advisor; None: not run."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The validated config as a dict (defaults filled as Snakemake fills them): the
    blocks that job specs pass on as written come from here."""

    @classmethod
    def from_config(cls, config: Mapping, validated: bool = False) -> Study:
        """The typed study of ``config`` (validated and default-filled first, unless
        ``validated`` says Snakemake already did)."""
        c = dict(config) if validated else load(config)
        datasets = {name: _build(Dataset, d, eval=_build(EvalRole, d.get("eval"),
                                                          **_formats(d.get("eval"))))
                    for name, d in c["datasets"].items()}
        models = {name: _build(Model, m, steps=tuple(m["steps"]),
                               **{k: tuple(m[k]) for k in ("eval_sets", "finetune")
                                  if m.get(k) is not None})
                  for name, m in c["models"].items()}
        analysis = AnalysisSettings.from_block(c["analysis"])
        t = c.get("transfer")
        transfer = None if t is None else _build(
            Transfer, t, models={n: _build(TransferModel, m, **_tuples(m, "steps"))
                                 for n, m in t["models"].items()},
            categories={k: tuple(v) for k, v in t["categories"].items()},
            **_tuples(t, "scales"))
        ev = dict(c["evaluation"])
        ev["shots"] = tuple(ev["shots"])
        evaluation = EvalConfig(**{k: v for k, v in ev.items()
                                   if k in {f.name for f in fields(EvalConfig)}})
        return cls(study=c["study"], models=models, datasets=datasets,
                   finetune=FinetuneBlock(defaults=c["finetune"]["defaults"],
                                          tasks={k: v or {} for k, v in
                                                 (c["finetune"]["tasks"] or {}).items()}),
                   evaluation=evaluation, analysis=analysis, threads=c.get("threads", 1),
                   confirm_rerun=c.get("confirm_rerun", False),
                   world=c.get("world"), transfer=transfer,
                   attribution=AttributionSettings.from_block(c.get("attribution")),
                   advisor=AdvisorBlock.from_config(c.get("advisor")), raw=c)


def _tuples(block: Mapping | None, *keys: str) -> dict:
    return {k: tuple(block[k]) for k in keys if block and block.get(k) is not None}


def _formats(block: Mapping | None) -> dict:
    return _tuples(block, "formats")

"""The cross-references a JSON schema cannot express, checked at parse time: each error is
a `ConfigError` naming the key as the user wrote it."""

from __future__ import annotations

from ckptsweep.data.adapters import check_dataset
from ckptsweep.data.tasks import TASK_TYPES, task_type
from ckptsweep.data.world.config import WorldConfig
from ckptsweep.errors import ConfigError
from ckptsweep.study import advisor
from ckptsweep.study.config import Study
from ckptsweep.study.grid import ablation, analysis_models, eval_plan, eval_sets, finetunes
from ckptsweep.study.transfer import categories, members, scales, settings, sft_variants
from ckptsweep.train.pretrain import PretrainConfig


def check(study: Study) -> None:
    """Every cross-reference of the config; raise ConfigError naming the key.

    Every check a job makes on a value from the config has its twin here (often the same
    function, called early), so a config mistake is refused before any job runs, and no
    finished output is deleted by a job that then fails on it
    (``tests/test_config_twins.py`` holds each job-side check against its twin)."""
    world = WorldConfig(**(study.world or {}))  # its own checks name world.<key>
    _datasets(study)
    _finetune(study)
    _models(study, world)
    _analysis(study)
    _transfer(study)
    _attribution(study, world)
    _advisor(study)


def _datasets(study: Study) -> None:
    datasets = study.datasets
    for name, d in datasets.items():
        if (d.source == "hub") != (d.hub is not None):
            raise ConfigError(f"datasets.{name}.hub", "required exactly when source is hub")
        if d.train_fraction is not None and d.n_train is not None:
            raise ConfigError(f"datasets.{name}", "n_train and train_fraction exclude each other")
        if d.task not in TASK_TYPES:
            raise ConfigError(f"datasets.{name}.task", f"unknown task type {d.task!r}; "
                                                       f"known: {sorted(TASK_TYPES)}")
        check_dataset(name, d.schema, d.task, d.options)
        ev = d.eval
        if ev is None:
            continue
        kind = task_type(d.task).kind
        if kind not in ("classification", "multiple_choice", "generation"):
            raise ConfigError(f"datasets.{name}.eval", f"task type {d.task!r} ({kind}) cannot "
                                                       "be evaluated")
        shots = max(study.evaluation.shots)
        if shots and d.n_train is not None and d.n_train < shots:
            raise ConfigError(f"datasets.{name}.n_train", f"{d.n_train} training records "
                              f"cannot give the {shots} demonstrations of evaluation.shots")
        if ev.of is not None and ev.of not in datasets:
            raise ConfigError(f"datasets.{name}.eval.of", f"{ev.of!r} is not a dataset")
        labels = task_type(d.task).labels
        if ev.answer_words and (kind != "classification" or study.evaluation.method
                                not in ("loglik", "tokenprob")):
            raise ConfigError(f"datasets.{name}.eval.answer_words", "needs a classification "
                              f"task scored by loglik or tokenprob, not {d.task!r} by "
                              f"{study.evaluation.method!r} (evaluation.method)")
        for trained, words in ev.answer_words.items():
            if sorted(words) != sorted(labels):
                raise ConfigError(f"datasets.{name}.eval.answer_words.{trained}",
                                  f"needs exactly the set's labels {list(labels)}, "
                                  f"got {sorted(words)}")
        have = task_type(d.task).formats
        for fmt in ev.formats:
            if fmt not in have:
                raise ConfigError(f"datasets.{name}.eval.formats", f"task type {d.task!r} has "
                                  f"no format {fmt!r}; it has {list(have)}")


def _finetune(study: Study) -> None:
    datasets = study.datasets
    for dataset in study.finetune.tasks:
        if dataset not in datasets:
            raise ConfigError(f"finetune.tasks.{dataset}",
                              f"not a dataset (datasets has {sorted(datasets)})")
        if task_type(datasets[dataset].task).kind == "multiple_choice":
            raise ConfigError(f"finetune.tasks.{dataset}",
                              "multiple-choice benchmarks are evaluated only")


def _models(study: Study, world: WorldConfig) -> None:
    tasks = study.finetune.tasks
    sets = eval_sets(study)
    for model, m in study.models.items():
        for dataset in m.finetune or []:
            if dataset not in tasks:
                raise ConfigError(f"models.{model}.finetune",
                                  f"{dataset!r} is not in finetune.tasks ({sorted(tasks)})")
        if m.source == "hub":
            steps_without = [s for s in m.steps if not m.repo and s not in m.repos]
            if steps_without:
                raise ConfigError(f"models.{model}", "a hub model needs `repo` (or `repos` "
                                                     f"for steps {steps_without})")
            extra = [k for k in ("refs", "repos") for s in getattr(m, k)
                     if int(s) not in m.steps]
            if extra:
                raise ConfigError(f"models.{model}.{extra[0]}", "names a step that is not "
                                  f"in models.{model}.steps {list(m.steps)}")
        if m.source == "pretrain":
            _pretrain(model, m, world)
        for name in m.eval_sets or []:
            if name not in sets:
                raise ConfigError(f"models.{model}.eval_sets", f"{name!r} is not an eval set "
                                  f"(datasets with an eval block: {sorted(sets)})")


def _pretrain(model: str, m, world: WorldConfig) -> None:
    """A pre-trained model's steps exist in its pre-training, and its mixture can be drawn
    from the world's corpus."""
    if m.pretrain is None:
        raise ConfigError(f"models.{model}.pretrain", "required for source pretrain")
    total = m.pretrain.get("steps", PretrainConfig.steps)
    for i, step in enumerate(m.steps):
        if step > total:
            raise ConfigError(f"models.{model}.steps[{i}]", f"step {step} is beyond "
                              f"models.{model}.pretrain.steps ({total}): the model is never "
                              "pre-trained that far")
    mixture = m.pretrain.get("mixture")
    if mixture:
        absent = [k for k, w in mixture.items() if w > 0 and not world.doc_weights.get(k)]
        if sum(mixture.values()) <= 0 or absent:
            raise ConfigError(f"models.{model}.pretrain.mixture", f"{mixture} needs a positive "
                              f"total over kinds the world's corpus has (world.doc_weights "
                              f"gives {absent} no documents)" if absent else
                              f"{mixture} needs a positive total")


def _attribution(study: Study, world: WorldConfig) -> None:
    a = study.attribution
    if a is None:
        return
    if a.finetune.people >= world.n_people:
        raise ConfigError("attribution.finetune.people", f"{a.finetune.people} must be below "
                          f"the world's pool of people ({world.n_people}, world.n_people)")


def _analysis(study: Study) -> None:
    a = study.analysis
    for model in a.models or []:
        if model not in study.models:
            raise ConfigError("analysis.models", f"{model!r} is not a model "
                                                 f"(models has {sorted(study.models)})")
    if a.ablation is not None:
        sets = eval_sets(study)
        classification = sorted(n for n, s in sets.items() if s["kind"] == "classification")
        for name in a.ablation.eval_sets or []:
            if name not in classification:
                raise ConfigError("analysis.ablation.eval_sets", f"{name!r} is not a "
                                  f"classification eval set; those are {classification}")
        if not ablation(study)["eval_sets"]:
            raise ConfigError("analysis.ablation.eval_sets", "no classification "
                              "in-domain eval set to default to; name the sets")
    if a.shots not in study.evaluation.shots:
        raise ConfigError("analysis.shots", f"{a.shots} is not in evaluation.shots "
                                            f"{list(study.evaluation.shots)}")
    for group, pairs in a.groups.items():
        for i, pair in enumerate(pairs):
            for key in ("eval", "train"):
                if pair[key] not in study.datasets and not (key == "train"
                                                             and pair[key] == "*"):
                    raise ConfigError(f"analysis.groups.{group}[{i}].{key}",
                                      f"{pair[key]!r} is not a dataset"
                                      + (" (or '*': every fine-tune)" if key == "train" else ""))
            if not _fine_tuned_on(study, pair["eval"], pair["train"]):
                raise ConfigError(f"analysis.groups.{group}[{i}].eval", f"eval set "
                                  f"{pair['eval']!r} gets no fine-tuned scores in format "
                                  f"{a.format!r} from a fine-tune of {pair['train']!r} "
                                  "(see the datasets' eval roles and analysis.format)")


def _fine_tuned_on(study: Study, eval_set: str, train: str) -> bool:
    """Whether some analysed fine-tune of ``train`` ('*': any) is evaluated on ``eval_set``
    in ``analysis.format``."""
    for model in analysis_models(study):
        for f in finetunes(study, model):
            if train in ("*", f.dataset):
                formats = eval_plan(study, f.name, model).get(eval_set, [])
                if study.analysis.format in formats:
                    return True
    return False


def _transfer(study: Study) -> None:
    """Cross-references of the ``transfer`` block."""
    t = study.transfer
    if t is None:
        return
    models = study.models
    sets = eval_sets(study)
    tasks = study.finetune.tasks
    if t.sft not in tasks:
        raise ConfigError("transfer.sft", f"{t.sft!r} is not in finetune.tasks ({sorted(tasks)})")
    cats = categories(study)
    seen: dict[str, str] = {}
    for cat, names in t.categories.items():
        for name in names:
            where = f"transfer.categories.{cat}"
            if name in seen:
                raise ConfigError(where, f"{name!r} is already in category {seen[name]!r}; "
                                         "a benchmark belongs to one category")
            seen[name] = cat
            if name not in sets:
                raise ConfigError(where, f"{name!r} is not an eval set "
                                         f"(datasets with an eval block: {sorted(sets)})")
            if sets[name]["kind"] not in ("multiple_choice", "classification"):
                raise ConfigError(where, f"{name!r} is a {sets[name]['kind']} set; confidence "
                                         "needs per-label probabilities (multiple choice or "
                                         "classification)")
    shots = settings(study)["shots"]
    if shots not in study.evaluation.shots:
        raise ConfigError("transfer.shots", f"{shots} is not in evaluation.shots "
                                            f"{list(study.evaluation.shots)}")
    for model, m in t.models.items():
        where = f"transfer.models.{model}"
        if model not in models:
            raise ConfigError(where, f"not a model (models has {sorted(models)})")
        bad = [s for s in m.steps or [] if s not in models[model].steps]
        if bad:
            raise ConfigError(f"{where}.steps", f"{bad} are not in models.{model}.steps "
                                                f"{list(models[model].steps)}")
        if not sft_variants(study, model):
            raise ConfigError(where, f"models.{model} has no fine-tune of transfer.sft "
                                     f"({t.sft!r}); check models.{model}.finetune")
        for variant in ["base", *sft_variants(study, model)]:
            plan = eval_plan(study, variant, model)
            missing = [n for n in cats if n not in plan]
            if missing:
                raise ConfigError(where, f"variant {variant!r} is not evaluated on {missing} "
                                         f"(see models.{model}.eval_sets and the datasets' "
                                         "eval roles)")
            nofmt = [n for n in cats if t.format not in plan[n]]
            if nofmt:
                raise ConfigError("transfer.format", f"{t.format!r} is not evaluated on {nofmt}")
    order = scales(study)
    used = {str(m.scale) for m in t.models.values()}
    if set(order) != used:
        raise ConfigError("transfer.scales", f"{order} must list exactly the scales of "
                                             f"transfer.models ({sorted(used)})")
    for scale in order:
        n = sum(1 for m in members(study) if m["scale"] == scale)
        if n < t.min_members:
            raise ConfigError("transfer.models", f"scale {scale!r} has {n} members "
                                                 "(checkpoints); rank correlations need at "
                                                 f"least {t.min_members} (transfer.min_members)")


def _advisor(study: Study) -> None:
    """The ``advisor`` block against the grid (its values the schema and
    `AdvisorSettings.from_block` have checked)."""
    a = study.advisor
    if a is None:
        return
    shots = list(study.evaluation.shots)
    for key, values in (("shots", a.shots or ()), ("base_shots", [a.base_shots])):
        bad = [v for v in values if v is not None and v not in shots]
        if bad:
            raise ConfigError(f"advisor.{key}", f"{bad} not in evaluation.shots {shots}")
    for key in ("n_params", "tokens_per_step"):
        value = getattr(a, key)
        extra = sorted(set(value) - set(study.models)) if isinstance(value, dict) else []
        if extra:
            raise ConfigError(f"advisor.{key}", f"{extra} are not models "
                                                f"(models has {sorted(study.models)})")
    if a.mode == "adaptive" and a.proxy is None:
        raise ConfigError("advisor.proxy", "required by advisor.mode adaptive: the proxy "
                                           "fine-tune ranks the checkpoints")
    if a.proxy is None:
        return
    tasks = study.finetune.tasks
    for name in a.proxy.tasks or []:
        kind = task_type(study.datasets[name].task).kind if name in tasks else None
        if kind not in advisor.PROXY_KINDS:
            raise ConfigError("advisor.proxy.tasks", f"{name!r} is not a classification or "
                              f"generation entry of finetune.tasks ({sorted(tasks)})")
    if not advisor.proxy_models(study):
        raise ConfigError("advisor.proxy.tasks", "no advised model (analysis.models) is "
                          "fine-tuned on a classification or generation task to proxy")
    need = max(1, *shots)
    for model in advisor.proxy_models(study):
        for f in advisor.proxy_finetunes(study, model):
            n = study.datasets[f.dataset].n_train
            if n is not None and n - a.proxy.dev_size < need:
                raise ConfigError("advisor.proxy.dev_size", f"{a.proxy.dev_size} of the "
                                  f"{n} training records of {f.dataset!r} leave fewer than "
                                  f"{need} to train the proxy on and draw demonstrations from")
    if a.mode == "adaptive":
        for model in advisor.models(study):
            if len(study.models[model].steps) < 2:
                raise ConfigError(f"models.{model}.steps", "the adaptive sweep needs two or "
                                                           "more checkpoints")

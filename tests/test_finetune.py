"""Fine-tuning: the loss mask, accumulation, determinism, and failures that leave nothing
that looks finished."""

import json
import math

import pytest
import torch

from ckptsweep.data.tasks import task_type
from ckptsweep.train.config import FinetuneConfig
from ckptsweep.train.examples import IGNORE, collate, encode_example
from ckptsweep.train.loop import finetune
from ckptsweep.train.loss import LossLog, completion_loss

NLI = task_type("nli")


def records(n=24):
    names, cities = ("Ana", "Bo", "Cy", "Di"), ("Rome", "Oslo", "Lima")
    return [{"id": f"r{i}", "premise": f"{names[i % 4]} lives in {cities[i % 3]}.",
             "hypothesis": f"{names[i % 4]} lives in {cities[(i // 4) % 3]}.",
             "label": 0 if i % 3 == (i // 4) % 3 else 2} for i in range(n)]


def test_prompt_tokens_carry_no_loss(tiny_tokenizer):
    ids, labels = encode_example(NLI, records()[0], tiny_tokenizer, "default", 512)
    completion = tiny_tokenizer(" entailment", add_special_tokens=False)["input_ids"]
    n = len(completion) + 1  # + EOS
    assert labels[:-n] == [IGNORE] * (len(ids) - n)
    assert labels[-n:] == ids[-n:] == completion + [tiny_tokenizer.eos_token_id]


def test_chat_loss_only_on_assistant_tokens(tiny_tokenizer):
    chat = task_type("chat")
    rec = {"id": "c", "messages": [{"role": "user", "content": "Where does Ana live?"},
                                   {"role": "assistant", "content": "Rome"}]}
    ids, labels = encode_example(chat, rec, tiny_tokenizer, "default", 512)
    trained = [i for i, y in zip(ids, labels, strict=True) if y != IGNORE]
    assert tiny_tokenizer.decode(trained) == "Rome<|endoftext|>"


def test_long_examples_keep_the_completion(tiny_tokenizer):
    rec = dict(records()[0], premise=" ".join(["Ana lives in Rome."] * 100))
    ids, labels = encode_example(NLI, rec, tiny_tokenizer, "default", 32)
    assert len(ids) == 32 and labels[-1] == tiny_tokenizer.eos_token_id


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_same_weights_and_loss_falls(tiny_tokenizer, tiny_model, tmp_path):
    from ckptsweep.train.pretrain import PretrainConfig, build_model

    cfg = FinetuneConfig(lr=3e-3, epochs=3, batch_size=8, seed=0)
    stats = finetune(tiny_model, tiny_tokenizer, NLI, records(), cfg, tmp_path / "a", log=None)
    assert stats["final_loss"] < stats["first_loss"]
    again = build_model(PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256,
                                       seed=0), tiny_tokenizer)
    finetune(again, tiny_tokenizer, NLI, records(), cfg, tmp_path / "b", log=None)
    assert torch.equal(weights(tiny_model), weights(again))
    saved = json.loads((tmp_path / "a/finetune.json").read_text())
    assert saved["config"]["lr"] == 3e-3 and (tmp_path / "a/model.safetensors").exists()


def test_accumulation_matches_one_big_batch(tiny_tokenizer, tmp_path):
    from ckptsweep.train.pretrain import PretrainConfig, build_model

    arch = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    big, small = build_model(arch, tiny_tokenizer), build_model(arch, tiny_tokenizer)
    base = dict(lr=1e-3, epochs=1, seed=0, warmup=0.0)
    finetune(big, tiny_tokenizer, NLI, records(), FinetuneConfig(batch_size=8, **base),
             tmp_path / "big", log=None)
    finetune(small, tiny_tokenizer, NLI, records(),
             FinetuneConfig(batch_size=4, grad_accum=2, **base), tmp_path / "small", log=None)
    torch.testing.assert_close(weights(big), weights(small), rtol=1e-4, atol=1e-5)


def test_nan_loss_fails_and_writes_no_model(tiny_tokenizer, tiny_model, tmp_path):
    with torch.no_grad():
        next(tiny_model.parameters()).fill_(float("nan"))
    # The losses are read back at the end of this short run, not every step: the error
    # still names the first step whose loss was not finite.
    with pytest.raises(FloatingPointError, match="nan at step 1; no model was written"):
        finetune(tiny_model, tiny_tokenizer, NLI, records(), FinetuneConfig(lr=1e-3),
                 tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


def test_losses_read_back_together_name_the_first_non_finite_step():
    log = LossLog([0.7])  # one step read before
    for value in (0.6, 0.5, float("inf"), float("nan")):
        log.add(torch.tensor(value))
    assert log.values == [0.7]  # nothing read yet
    with pytest.raises(FloatingPointError, match="inf at step 4"):
        log.read()


def test_the_loop_reads_each_loss_once_and_not_every_step(tiny_tokenizer, tiny_model,
                                                          tmp_path, monkeypatch):
    """Reading a loss makes the host wait for the GPU: the loop fetches them in batches
    (for a progress line, a saved state, the end), each exactly once."""
    fetches, read = [], LossLog.read

    def counted(self):
        if self.pending:
            fetches.append(len(self.pending))
        return read(self)

    monkeypatch.setattr(LossLog, "read", counted)
    cfg = FinetuneConfig(lr=1e-3, batch_size=2, epochs=1, save_every=5)
    stats = finetune(tiny_model, tiny_tokenizer, NLI, records(), cfg, tmp_path / "out",
                     log=None, resume_dir=tmp_path / "resume")
    saved = json.loads((tmp_path / "out/finetune.json").read_text())["losses"]
    assert sum(fetches) == stats["steps"] == len(saved) == 12
    assert len(fetches) < stats["steps"] and all(map(math.isfinite, saved))


def test_completion_loss_equals_the_models_own_loss(tiny_tokenizer, tiny_model):
    batch = [encode_example(NLI, r, tiny_tokenizer, "default", 512) for r in records(5)]
    ids, labels, mask = collate(batch, tiny_tokenizer.pad_token_id)
    n = int((labels[:, 1:] != IGNORE).sum())
    reference = tiny_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(completion_loss(tiny_model, ids, labels, mask) / n, reference)


def varied(n=24):
    """NLI records of varying lengths: every batch has another shape."""
    return [dict(r, premise=r["premise"] + " It rains." * (i % 5))
            for i, r in enumerate(records(n))]


@pytest.mark.parametrize("packing", [False, True])
def test_compiled_fine_tune_matches_eager_and_compiles_twice(tiny_tokenizer, tmp_path,
                                                             dynamo_counters, packing):
    from ckptsweep.train.pretrain import PretrainConfig, build_model

    arch = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    eager, compiled = build_model(arch, tiny_tokenizer), build_model(arch, tiny_tokenizer)
    base = dict(lr=1e-3, epochs=1, seed=0, batch_size=4, packing=packing)
    a = finetune(eager, tiny_tokenizer, NLI, varied(), FinetuneConfig(**base),
                 tmp_path / "eager", log=None)
    b = finetune(compiled, tiny_tokenizer, NLI, varied(), FinetuneConfig(compile=True, **base),
                 tmp_path / "compiled", log=None)
    torch.testing.assert_close(weights(compiled), weights(eager), rtol=1e-4, atol=1e-5)
    assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-5)
    # Six steps of different lengths: one graph for the first shape, one with the length
    # dynamic after the first change, then no more (a compile per shape would cost a GPU
    # run more than it saves), and no graph breaks.
    assert dynamo_counters["stats"]["unique_graphs"] == 2
    assert not dynamo_counters["graph_break"]

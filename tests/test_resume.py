"""Resumable fine-tuning: a job killed (SIGKILL) or stopped (SIGTERM) after a saved state
and then re-run ends with the same weights, bit for bit, as a run never stopped; a retry
with a halved micro-batch continues from the same state within float tolerance.

The kill is triggered by the state file appearing, never by a timer, so the tests do not
depend on the machine's speed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ckptsweep.checkpoints.load import load
from ckptsweep.data.tasks import task_type
from ckptsweep.train.config import FinetuneConfig
from ckptsweep.train.loop import finetune
from ckptsweep.train.state import STATE_FILE

from .test_finetune import records, weights

NLI = task_type("nli")
SPEC = {"task": "nli", "lr": 1e-3, "epochs": 2, "batch_size": 2, "warmup": 0.1,
        "save_every": 2, "seed": 3}


def command(job, *extra, spec=SPEC):
    return [sys.executable, "-m", "ckptsweep.cli", "finetune", "--spec", json.dumps(spec),
            "--manifest", str(job / "manifest.tsv"), "--step", "0",
            "--train", str(job / "train.jsonl"), "--threads", "1",
            "--resume-dir", str(job / "resume"), "--out", str(job / "out"), *extra]


def reference(job, spec=SPEC):
    """An uninterrupted run, in this process with the CLI's single thread."""
    spec = dict(spec)
    task = task_type(spec.pop("task"))
    model, tok = load(job / "ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        finetune(model, tok, task, records(48), FinetuneConfig(**spec), job / "ref", log=None)
    finally:
        torch.set_num_threads(threads)
    return weights(model)


def signal_at_first_state(job, sig, *extra, env=None):
    """Start the CLI, wait for its first saved state, send ``sig``; return the process
    (still running, its output in ``stdout``)."""
    proc = subprocess.Popen(command(job, *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    state = job / "resume" / STATE_FILE
    while not state.exists():
        assert proc.poll() is None, f"the job ended before saving a state:\n{proc.stdout.read()}"
        time.sleep(0.005)
    proc.send_signal(sig)
    return proc


def stop_at_first_state(job, sig, *extra):
    """`signal_at_first_state`, then wait for the process to end."""
    proc = signal_at_first_state(job, sig, *extra)
    proc.wait(timeout=120)
    return proc


def resume(job, *extra):
    done = subprocess.run(command(job, *extra), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from" in done.stdout
    assert not (job / "resume").exists(), "a finished job leaves no resume state"
    info = json.loads((job / "out" / "finetune.json").read_text())
    assert info["stats"]["resumed_at_step"] > 0
    assert (job / "out" / "throughput.json").exists()
    model, _ = load(job / "out")
    return weights(model)


def test_killed_job_resumes_to_identical_weights(job):
    proc = stop_at_first_state(job, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (job / "out").exists()
    assert torch.equal(resume(job), reference(job))


def test_sigterm_saves_state_and_exits_nonzero(job):
    proc = stop_at_first_state(job, signal.SIGTERM)
    out = proc.stdout.read()
    assert proc.returncode == 143, out
    assert "SIGTERM: stopped after step" in out and "a re-run resumes from it" in out
    assert (job / "resume" / STATE_FILE).exists() and not (job / "out").exists()
    assert torch.equal(resume(job), reference(job))


def test_near_its_slurm_time_limit_a_job_saves_and_stops(job, monkeypatch):
    """Inside a Slurm job the loop stops `stop_margin` seconds before the job's end time,
    as on SIGTERM (which Slurm may deliver to Snakemake's job runner only): the state is
    saved, the exit is 143, and a re-run outside the limit finishes to identical weights."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_END_TIME": str(int(time.time()) + 60)}
    spec = {**SPEC, "stop_margin": 120}  # the deadline has passed: stop after step 1
    done = subprocess.run(command(job, spec=spec), capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert done.returncode == 143, done.stdout + done.stderr
    assert "the job's time limit is near: stopped after step 1 of" in done.stdout
    assert (job / "resume" / STATE_FILE).exists() and not (job / "out").exists()
    resumed = subprocess.run(command(job, spec=spec), capture_output=True, text=True,
                             timeout=300)  # no SLURM_JOB_ID: no deadline
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # Snakemake truncates a job's log when it re-runs it: the resumed attempt's log opens
    # with the interrupted attempt's lines, then says where it resumed and what it ran.
    log = resumed.stdout
    earlier = log.index("--- the earlier attempt(s) of this fine-tune")
    assert log.index("the job's time limit is near: stopped after step 1 of") > earlier
    assert log.index("--- this attempt ---") < log.index("resumed from")
    assert "(resumed at step 1: this attempt ran" in log
    model, _ = load(job / "out")
    assert torch.equal(weights(model), reference(job))


def test_retry_with_half_micro_batch_resumes_attempt_1_state(job):
    """Attempt 2 (micro-batch 1 × 2 accumulated) continues attempt 1's state: the state
    counts optimizer steps, which cover the same examples whatever the micro-batch."""
    stop_at_first_state(job, signal.SIGKILL)
    torch.testing.assert_close(resume(job, "--attempt", "2"), reference(job),
                               rtol=1e-4, atol=1e-5)


def test_state_for_other_settings_is_discarded(job):
    stop_at_first_state(job, signal.SIGKILL)
    model, tok = load(job / "ckpt")
    other = {k: v for k, v in SPEC.items() if k != "task"} | {"lr": 5e-4}
    lines = []
    finetune(model, tok, NLI, records(48), FinetuneConfig(**other), job / "other",
             log=lines.append, resume_dir=job / "resume")
    assert any(line.startswith("discarding resume state") for line in lines)
    assert not (job / "resume").exists()


class Planted:
    """Unpickled, it calls a function: here one that creates the folder ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_planted_state_runs_no_code_and_is_discarded(tiny_tokenizer, tiny_model, tmp_path):
    """The resume folder may sit on a shared file system: a state file holding an object
    whose unpickling would run code is refused without running it, discarded with a log
    line, and the job trains from the start and finishes."""
    from ckptsweep.train.state import FORMAT

    resume, marker = tmp_path / "resume", tmp_path / "code-ran"
    resume.mkdir()
    blob = {"format": FORMAT, "fingerprint": "any", "python_rng": Planted(marker)}
    torch.save(blob, resume / STATE_FILE)
    lines = []
    stats = finetune(tiny_model, tiny_tokenizer, NLI, records(), FinetuneConfig(lr=1e-3),
                     tmp_path / "out", log=lines.append, resume_dir=resume)
    assert not marker.exists(), "loading the resume state ran code from it"
    assert any(line.startswith(f"discarding unreadable resume state {resume / STATE_FILE}")
               for line in lines), lines
    assert stats["resumed_at_step"] == 0 and (tmp_path / "out" / "model.safetensors").exists()
    assert not resume.exists()
    torch.save(blob, tmp_path / "copy.pt")  # the test's premise: plain unpickling runs it
    torch.load(tmp_path / "copy.pt", weights_only=False)
    assert marker.is_dir()


def test_attempt_2_halves_micro_batch_same_weights(tiny_tokenizer, tmp_path):
    from ckptsweep.train.pretrain import PretrainConfig, build_model

    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=8, seed=0)
    retry = cfg.for_attempt(2)
    assert (retry.batch_size, retry.grad_accum) == (4, 2)
    assert retry.effective_batch == cfg.effective_batch
    assert cfg.for_attempt(3).batch_size == 2 and cfg.for_attempt(9).batch_size == 1
    arch = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    a, b = build_model(arch, tiny_tokenizer), build_model(arch, tiny_tokenizer)
    finetune(a, tiny_tokenizer, NLI, records(), cfg, tmp_path / "a", log=None)
    finetune(b, tiny_tokenizer, NLI, records(), retry, tmp_path / "b", log=None)
    torch.testing.assert_close(weights(a), weights(b), rtol=1e-4, atol=1e-5)


def test_packed_and_padded_batches_give_the_same_loss(tiny_tokenizer, tiny_model):
    from ckptsweep.train.examples import collate, encode_example, pack
    from ckptsweep.train.loss import completion_loss

    batch = [encode_example(NLI, r, tiny_tokenizer, "default", 512) for r in records(6)]
    ids, labels, mask = collate(batch, tiny_tokenizer.pad_token_id)
    padded = completion_loss(tiny_model, ids, labels, mask)
    row, row_labels, positions = pack(batch)
    assert row.shape == (1, sum(len(x) for x, _ in batch))  # no pad token computed
    assert positions[0, len(batch[0][0])] == 0  # positions restart per example
    torch.testing.assert_close(completion_loss(tiny_model, row, row_labels, None, positions),
                               padded)


def test_packed_fine_tune_matches_padded(tiny_tokenizer, tmp_path):
    from ckptsweep.train.pretrain import PretrainConfig, build_model

    arch = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    a, b = build_model(arch, tiny_tokenizer), build_model(arch, tiny_tokenizer)
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=4, seed=0)
    sa = finetune(a, tiny_tokenizer, NLI, records(), cfg, tmp_path / "a", log=None)
    sb = finetune(b, tiny_tokenizer, NLI, records(), FinetuneConfig(**{**cfg.__dict__,
                  "packing": True}), tmp_path / "b", log=None)
    torch.testing.assert_close(weights(a), weights(b), rtol=1e-4, atol=1e-5)
    assert sb["tokens"] == sa["tokens"]  # the same non-pad tokens, no pad computed
    run = json.loads(Path(tmp_path / "b" / "throughput.json").read_text())
    assert run["device"] == "cpu" and run["mfu"] is None and run["tokens_per_s"] > 0

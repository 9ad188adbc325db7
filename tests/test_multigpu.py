"""Data-parallel fine-tuning: `ckptsweep finetune` with ``gpus: 2`` re-launches itself under
torchrun as two processes (here on CPU with the Gloo backend: the same sharded FSDP2 code
that runs on a GPU node), and ends with the weights of the one-process run of the same
global batch, within float tolerance (the gradient sums run in another order). A
two-process run stopped by SIGTERM after a saved state resumes to the weights of an
uninterrupted two-process run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ckptsweep.checkpoints.load import load
from ckptsweep.train.distributed import shares
from ckptsweep.train.state import STATE_FILE, read_state_file

from .test_finetune import weights
from .test_resume import SPEC, command, reference

# Two processes with one thread each, on the two cores of a small machine.
SPEC2 = {**SPEC, "gpus": 2, "device": "cpu"}


def gloo_missing() -> str | None:
    import torch.distributed as dist

    if not dist.is_available():
        return "torch was built without torch.distributed"
    if not dist.is_gloo_available():
        return "torch was built without the Gloo backend"
    return None


pytestmark = pytest.mark.skipif(gloo_missing() is not None,
                                reason=f"two-process CPU run impossible: {gloo_missing()}")


def test_meta_load_has_the_architecture_and_no_weights(job):
    """What the ranks but the first of a sharded fine-tune load: no memory, same shapes
    (the weights arrive from rank 0 after sharding; without that broadcast, or without
    the buffers', the two-process test below does not match the one-process run)."""
    real, _ = load(job / "ckpt")
    meta, tok = load(job / "ckpt", meta=True)
    assert all(t.is_meta for t in (*meta.parameters(), *meta.buffers()))
    assert {n: p.shape for n, p in meta.named_parameters()} == {
        n: p.shape for n, p in real.named_parameters()}
    assert tok.pad_token_id is not None


def test_shares_split_each_step_evenly_with_equal_micro_batch_counts():
    group = list(range(5))
    assert shares(group, 2, 0, 1) == [[0, 1], [2, 3], [4]]  # one process: unchanged
    two = [shares(group, 2, r, 2) for r in range(2)]
    assert two == [[[0, 1], []], [[2, 3], [4]]]
    three = [shares([7], 4, r, 3) for r in range(3)]
    assert three == [[[]], [[]], [[7]]]  # every rank runs one (possibly empty) micro-batch
    for world in (2, 3, 4):
        for n in range(1, 10):
            parts = [shares(list(range(n)), 2, r, world) for r in range(world)]
            assert len({len(p) for p in parts}) == 1
            assert sorted(i for p in parts for m in p for i in m) == list(range(n))


def test_gpus_beyond_visible_devices_fail_clearly(job, capsys):
    from ckptsweep.cli import main

    argv = command(job, spec={**SPEC, "gpus": 2})[3:]  # device auto, no GPU here
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2 GPUs")
    with pytest.raises(SystemExit, match="asks for gpus=2 but 0 GPU"):
        main(argv)


def test_two_processes_stop_resume_and_match_one(job):
    """The CLI with gpus: 2 launches torchrun itself; SIGTERM (to torchrun, which forwards
    it to both workers) once the first state is written: both stop at the same step and
    save; the re-run resumes from the sharded state and ends with the one-process
    weights of the same global batches."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(job, spec=SPEC2), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=env)
    state = job / "resume" / STATE_FILE
    try:
        while not state.exists():
            assert proc.poll() is None, f"ended before saving a state:\n{proc.stdout.read()}"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:  # never leave workers behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert "launching 2 processes" in out and "torch.distributed.run" in out, out
    assert proc.returncode != 0, out
    assert out.count("SIGTERM: stopped after step") == 2, out  # both ranks, same step
    assert state.exists() and not (job / "out").exists()
    blob = read_state_file(state)  # plain data: loads without unpickling objects
    assert blob["world"] == 2 and (job / "resume" / blob["shards"]).is_dir()
    assert len(list((job / "resume").glob("shards-*"))) == 1, "older shards removed"

    done = subprocess.run(command(job, spec=SPEC2), capture_output=True, text=True,
                          timeout=300, env=env)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "resumed from" in log and "(2 processes wrote it, 2 read it)" in log
    assert log.count("fine-tuned ") == 1, "only rank 0 logs the summary"
    assert not (job / "resume").exists(), "a finished job leaves no resume state"
    info = json.loads((job / "out" / "finetune.json").read_text())
    assert info["stats"]["resumed_at_step"] == blob["train"]["step"] > 0
    assert json.loads((job / "out" / "throughput.json").read_text())["processes"] == 2
    model, _ = load(job / "out")
    torch.testing.assert_close(weights(model), reference(job), rtol=1e-4, atol=1e-5)


def test_sharded_resume_unpickles_nothing_from_the_shards(tiny_tokenizer, tmp_path,
                                                          monkeypatch):
    """DCP's own reader unpickles a checkpoint folder's ``.metadata`` with plain pickle; a
    sharded resume never reads it (the shards' index travels in the state file, which
    loads as plain data). One sharded process (torchrun's variables set here, Gloo) stops
    at its Slurm time limit; a ``.metadata`` that would run code is planted among its
    shards; the re-run resumes from the shards without running it, to the weights of an
    uninterrupted one-process run."""
    import pickle
    import socket

    from ckptsweep.train.config import FinetuneConfig
    from ckptsweep.train.loop import finetune
    from ckptsweep.train.pretrain import PretrainConfig, build_model
    from ckptsweep.train.stopping import Interrupted

    from .test_finetune import records
    from .test_resume import NLI, Planted

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)}
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    arch = PretrainConfig(layers=1, hidden=32, heads=2, ffn=64, max_position=256, seed=0)
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=4, seed=0, device="cpu",
                         stop_margin=120)
    resume, marker, out = tmp_path / "resume", tmp_path / "code-ran", tmp_path / "out"
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 60))  # stop at once
    with pytest.raises(Interrupted):
        finetune(build_model(arch, tiny_tokenizer), tiny_tokenizer, NLI, records(), cfg, out,
                 log=None, resume_dir=resume)
    monkeypatch.delenv("SLURM_JOB_ID")
    (shards,) = resume.glob("shards-*")
    (shards / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    lines = []
    finetune(build_model(arch, tiny_tokenizer), tiny_tokenizer, NLI, records(), cfg, out,
             log=lines.append, resume_dir=resume)
    assert not marker.exists(), "resuming ran code from the shard folder"
    assert any(line.startswith("resumed from") for line in lines), lines
    for name in torchrun:
        monkeypatch.delenv(name)
    plain = build_model(arch, tiny_tokenizer)
    finetune(plain, tiny_tokenizer, NLI, records(), cfg, tmp_path / "plain", log=None)
    torch.testing.assert_close(weights(load(out)[0]), weights(plain), rtol=1e-4, atol=1e-5)
    (tmp_path / "shards").mkdir()  # the test's premise: DCP's reader would have run it
    (tmp_path / "shards" / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    from torch.distributed.checkpoint import FileSystemReader

    with pytest.raises(Exception):  # noqa: B017  (what it unpickled is no index)
        FileSystemReader(str(tmp_path / "shards")).read_metadata()
    assert marker.is_dir()


def test_two_processes_compiled_match_one(job, cxx_compiler):
    """``compile: true`` on a sharded fine-tune (the body compiled over FSDP2's units, as on
    a GPU node) ends with the one-process eager weights."""
    spec = {**SPEC2, "compile": True, "save_every": 0}
    done = subprocess.run(command(job, spec=spec), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    model, _ = load(job / "out")
    torch.testing.assert_close(weights(model), reference(job), rtol=1e-4, atol=1e-5)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))

"""How the model calls are batched (``EvalConfig.batch_size``): `Batching` cuts a list of
sequences, sorted longest first, into batches and runs them, splitting any batch that runs
out of memory.

- A number: that many sequences per forward (prompts per ``generate`` call), as given.
- ``auto``: a token budget per forward. A batch costs rows × its padded width, plus per row
  the positions whose logits are kept, each counted as `logit_tokens` tokens (one on a
  CPU); a generation row's width is its prompt plus ``max_new_tokens`` (the KV cache it
  ends with). Sequences come longest first, so a batch's width is its first row's and
  padding stays small. The budget is the device's: on a GPU from its free memory, scaled
  from one probe forward whose memory peak is measured (`gpu_budget`); on a CPU a rule
  measured on this project's models (`cpu_budget`).

An out-of-memory error (CUDA's, or the CPU allocator's) never ends the job: the batch that
failed is split in two and each half retried (recursively, down to one row); the halves
that ran keep their results, and later batches get the lowered budget (or row count).
`Batching.note` reports it, once per block.

Batching never changes a prediction: every row is scored alone up to float rounding
(left padding, masks and position ids make the padded rows invisible to it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ckptsweep.errors import ConfigError

AUTO = "auto"
SCORE, GENERATE = "score", "generate"
"""The kinds of model call, each with its own budget: scoring forwards, ``generate``."""

GPU_SHARE = 0.5
"""Share of the free GPU memory a batch may use: the rest is headroom for what the probe
does not see (allocator fragmentation, a scoring batch's KV cache held while its answers
run, generation's cache growing by concatenation)."""
PROBE_TOKENS = 8192
"""Cost of the GPU probe forward: big enough that fixed buffers do not dominate its peak."""


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's (a plain RuntimeError)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "DefaultCPUAllocator" in text)


def logit_tokens(model) -> int:
    """A kept logit position in tokens. On a GPU, where the budget is memory, ``vocab /
    hidden``: its float row holds that many hidden states' numbers. On a CPU, where it is
    time, one: its share of the vocabulary projection (vocab × hidden multiply-adds) is
    about a token's of the layers (12 × layers × hidden²) for the models here."""
    model = _eager(model)
    hidden = getattr(model.config, "hidden_size", None)
    if model.device.type != "cuda" or not hidden:
        return 1
    return max(1, round(model.config.vocab_size / hidden))


def cpu_budget(model, kind: str) -> int:
    """Tokens per forward on a CPU: ``2**19 / hidden`` for scoring (1,024 to 4,096),
    ``2**21 / hidden`` for generation (1,024 to 8,192). Below the optimum the per-call
    overhead of many small forwards costs; above it padding and caches do.

    Measured 2026-12-03 on 2 shared cores of an AMD EPYC (2 MiB L2 a core, 32 MiB L3),
    torch 2.13, float32, one thread timed by its CPU time (the machine was shared):
    ``bench/eval_throughput.py --threads 1 --clock cpu --mc-batch auto=N ...``, examples/s
    at N tokens per forward; 2-shot-like prompts of 64-256 tokens; multiple choice with
    4 answers of 1-8 tokens (tiny: 300 examples, m34: 100), generation of 60 prompts with
    40 new tokens. Runs differ by up to ~15 % from one another.

    ==============  ==========================================  =========================
    preset          multiple choice at 1k 2k 4k 8k 16k           generation at 2k 4k 8k 16k
    ==============  ==========================================  =========================
    tiny (h 128)    102 160 150 139 126 (rows 8: 170, 50: 156)  48 60 65 58 (32: 58)
    m34 (h 512)     4.5 4.3 4.3 3.7 3.4 (rows 8: 4.6, 50: 3.5)  3.0 2.8 2.3 2.0 (16: 2.8)
    ==============  ==========================================  =========================

    Generation was measured again after its KV cache stopped re-copying itself at every
    token (`kvcache`; 2026-12-03, same machine and command, the CPU shared with a test
    run): m34 2.59 / 2.84 / 2.84 examples/s at 2k / 4k / 8k tokens (16 rows: 2.93), so
    its budget doubled to 4k; tiny 74 at its 8k cap (32 rows: 61).

    The optimum falls as the width grows (a token's work grows with it, so fewer tokens
    amortise a call's overhead); models narrower than tiny keep tiny's budgets, since its
    larger ones measured slower (padding).

    With more intra-op threads a forward needs more tokens to keep them busy: the budget
    scales with ``torch.get_num_threads()`` (same caps). Measured 2026-12-03, m34, 2
    threads, wall time on the otherwise quiet machine: 150 multiple-choice examples in
    21.5 / 18.5 / 21.6 s at 1k / 2k / 4k tokens, 60 generations in 20.5 / 14.8 / 15.1 s
    at 2k / 4k / 8k (fixed 16 rows: 16.1 s).
    """
    hidden = getattr(_eager(model).config, "hidden_size", 512)
    threads = max(1, torch.get_num_threads())
    if kind == GENERATE:
        return min(8192, max(1024, threads * 2**21 // hidden))
    return min(4096, max(1024, threads * 2**19 // hidden))


def gpu_budget(model, kind: str, width: int) -> int:
    """Tokens per forward on a GPU: `GPU_SHARE` of its free memory over the bytes per token
    of one probe forward (about `PROBE_TOKENS`, ``width`` wide: the first, widest batch),
    with the KV cache kept (generation keeps it; a scoring batch with multi-token answers
    too) and a padded row, so attention takes the masked path the real batches take."""
    model = _eager(model)
    device = model.device
    keep = 1 if kind == GENERATE else min(width, 16)
    row = width + keep * logit_tokens(model)
    rows = max(1, PROBE_TOKENS // row)
    ids = torch.zeros((rows, width), dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=True)
        out.logits.float().log_softmax(-1)
    del out
    peak = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return scale_budget(rows * row, peak, free)


def scale_budget(probe_cost: int, probe_bytes: int, free_bytes: int) -> int:
    """The budget whose memory, at the probe's bytes per token, is `GPU_SHARE` of free."""
    return max(1, int(GPU_SHARE * free_bytes * probe_cost / max(probe_bytes, 1)))


def _eager(model):
    """The module itself under a ``torch.compile`` wrapper (for its config and device)."""
    return getattr(model, "_orig_mod", model)


class Batching:
    """The batching of one evaluation: the policy of ``EvalConfig.batch_size`` and what it
    learnt (the budgets auto chose, lowered by any out-of-memory split)."""

    def __init__(self, size: int | str = AUTO, budget: int | None = None):
        if size != AUTO and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigError("evaluation.batch_size",
                              f"{size!r} is neither a number of sequences >= 1 nor {AUTO!r}")
        self.rows: int | None = None if size == AUTO else size
        """Sequences per batch (a number), else None (auto)."""
        self.budgets: dict[str, int] = {} if budget is None else {SCORE: budget,
                                                                  GENERATE: budget}
        """Per kind of call, auto's tokens per forward, once chosen (``budget``: given, for
        tests and the benchmark's sweeps)."""
        self.chosen: dict[str, int] = dict(self.budgets)
        """The budgets as first chosen (for the report)."""
        self.splits = 0
        self._used: set[str] = set()
        self._reported: tuple = ((), 0)

    @classmethod
    def of(cls, size: int | str | Batching) -> Batching:
        """``size`` itself if it is a `Batching`, else a new one for it."""
        return size if isinstance(size, Batching) else cls(size)

    def budget(self, model, kind: str, width: int) -> int:
        """Auto's tokens per forward for ``kind``, chosen on first use."""
        if kind not in self.budgets:
            on_gpu = _eager(model).device.type == "cuda"
            budget = gpu_budget(model, kind, width) if on_gpu else cpu_budget(model, kind)
            self.budgets[kind] = self.chosen[kind] = budget
        self._used.add(kind)
        return self.budgets[kind]

    def each(self, model, kind: str, shapes: Sequence[tuple[int, int]],
             run: Callable[[list[int]], None]) -> None:
        """``run`` on consecutive batches of the positions ``0..len(shapes) - 1``, whose
        ``shapes[k]`` is (width, logit positions kept) of row ``k``, widths non-increasing.

        ``run`` must keep a batch's results only once it has computed all of them, so that
        a batch split after an out-of-memory error is not counted twice. Each batch is cut
        with the budget of the moment, so one lowered by a split holds for the rest.
        """
        start = 0
        while start < len(shapes):
            n = self._take(model, kind, shapes, start)
            self._run(model, kind, shapes, list(range(start, start + n)), run)
            start += n

    def _take(self, model, kind: str, shapes: Sequence[tuple[int, int]], start: int) -> int:
        """How many rows from ``start`` on the next batch takes (at least one)."""
        if self.rows is not None:
            return min(self.rows, len(shapes) - start)
        budget = self.budget(model, kind, shapes[start][0])
        per_logit = logit_tokens(model)
        width = keep = n = 0
        for w, k in shapes[start:]:
            width, keep = max(width, w), max(keep, k)
            if n and (n + 1) * (width + keep * per_logit) > budget:
                break
            n += 1
        return n

    def cost(self, model, shapes: Sequence[tuple[int, int]], rows: Sequence[int]) -> int:
        """Tokens of a batch: rows × (widest row + most logit positions kept, in tokens)."""
        width = max(shapes[r][0] for r in rows)
        keep = max(shapes[r][1] for r in rows)
        return len(rows) * (width + keep * logit_tokens(model))

    def _run(self, model, kind: str, shapes: Sequence[tuple[int, int]], rows: list[int],
             run: Callable[[list[int]], None]) -> None:
        try:
            run(rows)
            return
        except RuntimeError as err:
            if len(rows) == 1 or not is_out_of_memory(err):
                raise
        # Past the except block: the failed call's tensors, which its traceback held, are
        # free again before the halves run.
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        self.splits += 1
        half = len(rows) // 2
        if self.rows is not None:
            self.rows = min(self.rows, half)
        else:
            self.budgets[kind] = min(self.budgets[kind], max(1, self.cost(model, shapes,
                                                                          rows) // 2))
        self._run(model, kind, shapes, rows[:half], run)
        self._run(model, kind, shapes, rows[half:], run)

    def note(self) -> str:
        """What changed since the last note: the budgets auto chose, and any out-of-memory
        split with the budget (or rows) it settled on; "" if nothing did."""
        used = {kind: budget for kind, budget in self.budgets.items() if kind in self._used}
        state = (tuple(sorted(used.items())), self.splits)
        if state == self._reported:
            return ""
        new_splits = self.splits - self._reported[1]
        self._reported = state
        if self.rows is not None:
            return (f"out of memory: {new_splits} batch(es) split in two and retried, now "
                    f"{self.rows} sequences per batch")
        budgets = ", ".join(f"{kind} {budget} tokens" for kind, budget in state[0])
        if not new_splits:
            return f"batches: auto, {budgets} per forward"
        return (f"out of memory: {new_splits} batch(es) split in two and retried; batches: "
                f"auto, now {budgets} per forward")

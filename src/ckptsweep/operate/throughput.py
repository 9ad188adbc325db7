"""The throughput table (``throughput.yaml`` beside this module) and its lookup.

A *rate* is the model FLOPs per second one device sustains for one kind of work on one
model shape: ``pretrain`` and ``finetune`` (6 FLOPs per parameter and token), ``score``
(2 per parameter and prompt or candidate token: classification, multiple choice, the
prefill of generation), ``decode`` (2 per parameter and generated token) and
``attribute`` (fact tracing, counted like training). Every entry of the table says where
and when it was measured, or which published figure or extrapolation it comes from
(``basis``); `rate` returns it with that provenance, and says so when it had to borrow an
entry of another shape or device. Rates that ``plan`` derives from a study's own
``benchmarks/`` replace these (``basis: benchmarks``).

The parameter count N of a shape is the one `ckptsweep.train.throughput.flop_params`
counts: every parameter but an input embedding that is not also the output head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("throughput.yaml")
KINDS = ("pretrain", "finetune", "score", "decode", "attribute")
FLOPS_PER_TOKEN = {"pretrain": 6, "finetune": 6, "score": 2, "decode": 2, "attribute": 6}
"""Model FLOPs per parameter and token of each kind of work (6N training, 2N inference)."""


@cache
def table(path: str | Path = TABLE) -> dict:
    """The parsed table (cached)."""
    import yaml

    return yaml.safe_load(Path(path).read_text())


# ------------------------------------------------------------------------------ shapes

@dataclass(frozen=True)
class Shape:
    """A model's architecture, as far as its cost goes."""

    name: str
    layers: int
    hidden: int
    ffn: int
    vocab: int
    tied: bool
    kv_hidden: int | None = None
    """Width of the key and value projections (grouped-query attention); None: hidden."""
    max_position: int = 2048
    params_total: int | None = None
    """The published parameter count, when known (else computed)."""
    source: str = ""

    @property
    def params(self) -> int:
        """All parameters (a tied embedding counted once)."""
        if self.params_total:
            return self.params_total
        kv = self.kv_hidden or self.hidden
        layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.ffn
        heads = 1 if self.tied else 2
        return self.layers * layer + heads * self.vocab * self.hidden

    @property
    def flop_params(self) -> int:
        """N of 6N and 2N: all parameters but an untied input embedding."""
        return self.params if self.tied else self.params - self.vocab * self.hidden


def embedded_shape(pretrain: Mapping, vocab_size: int) -> Shape:
    """The shape of a tiny OLMo pre-trained here (``models.<m>.pretrain``; its output head
    is the embedding, `ckptsweep.train.pretrain.build_model`). ``vocab_size`` is the
    tokenizer's target; the world's corpus may fill fewer (1716 of 2048 for the demo), so
    N errs high by at most that share of the embedding."""
    from ckptsweep.train.pretrain import PretrainConfig

    cfg = PretrainConfig(**{k: v for k, v in pretrain.items()
                            if k in PretrainConfig.__dataclass_fields__})
    name = f"olmo-l{cfg.layers}-h{cfg.hidden}-f{cfg.ffn}-v{vocab_size}"
    return Shape(name, cfg.layers, cfg.hidden, cfg.ffn, vocab_size, tied=True,
                 max_position=cfg.max_position, source="models.<m>.pretrain")


def hub_shape(repo: str | None) -> Shape | None:
    """The table's shape of a hub repo (None: not in the table)."""
    for name, s in table()["shapes"].items():
        if repo and repo in s.get("repos", []):
            return Shape(name, s["layers"], s["hidden"], s["ffn"], s["vocab"], s["tied"],
                         s.get("kv_hidden"), s.get("max_position", 2048), s.get("params"),
                         s["source"])
    return None


# ------------------------------------------------------------------------------ devices

def device_name(text: str | None) -> str:
    """The table's name of a device string (``NVIDIA A100-SXM4-80GB`` -> ``A100``,
    ``cpu`` -> ``cpu``); unknown names are returned as given."""
    if not text:
        return "cpu"
    for name, d in table()["devices"].items():
        if text == name or any(m in text for m in d.get("match", [])):
            return name
    return str(text)


def device(name: str) -> dict:
    return table()["devices"].get(name, {})


# ------------------------------------------------------------------------------ rates

@dataclass(frozen=True)
class Rate:
    """Sustained model FLOP/s of one device for one kind of work, with its provenance."""

    kind: str
    flops_per_s: float
    overhead_s: float
    """Per job: start-up, loading the data, saving (the table's ``overhead_s``)."""
    load_s: float
    """Per model an evaluation job loads (``load_s``)."""
    basis: str
    """measured, derived, published, extrapolation or benchmarks."""
    source: str

    def seconds(self, flops: float, devices: int = 1) -> float:
        return flops / (self.flops_per_s * max(devices, 1))


def _entry_flops(e: Mapping, shape: Shape, dev: Mapping, batch: int) -> float | None:
    """An entry's FLOP/s: given, or MFU x peak, or (decode) from the bandwidth model."""
    if "flops_per_s" in e:
        return float(e["flops_per_s"])
    peak = dev.get("peak_flops")
    if "mfu" in e and peak:
        return float(e["mfu"]) * float(peak)
    if "hbm_util" in e and dev.get("hbm_bytes_per_s"):
        # One decoding step reads every weight once (bf16: 2 bytes) for the whole batch,
        # and cannot be faster than the per-layer kernel launches of an eager forward.
        step = max(2 * shape.params / (float(e["hbm_util"]) * float(dev["hbm_bytes_per_s"])),
                   shape.layers * float(e.get("launch_s_per_layer", 0)))
        return 2 * shape.flop_params * batch / step
    return None


def _describe(e: Mapping) -> str:
    where = e.get("where", "")
    when = f", {e['when']}" if e.get("when") else ""
    return f"{e.get('basis', '?')}: {where}{when}"


def rate(shape: Shape, dev_name: str, kind: str, batch: int = 1) -> Rate | None:
    """The table's rate for ``kind`` on ``shape`` and device ``dev_name``.

    Exact entries first. Else, on the same device, the entry of the nearest shape (by N,
    within a factor of 30: MFU carries over between similar sizes, an absolute FLOP/s
    does not across the tiny CPU shapes), then the same shape on another device, then the
    nearest shape anywhere, each labelled an extrapolation. None: the table has no entry
    of this kind at all."""
    entries = [e for e in table()["rates"] if e["kind"] == kind]
    dev = device(dev_name)

    def make(e: Mapping, note: str = "") -> Rate | None:
        edev = device(e["device"]) if e["device"] != dev_name else dev
        used_dev = dev if ("mfu" in e or "hbm_util" in e) and dev else edev
        flops = _entry_flops(e, shape, used_dev, batch)
        if flops is None:
            return None
        basis = "extrapolation" if note else e.get("basis", "?")
        return Rate(kind, flops, float(e.get("overhead_s", 0)), float(e.get("load_s", 0)),
                    basis, (f"{note}; " if note else "") + _describe(e))

    def distance(e) -> float:
        other = _shape_of(e["shape"])
        return abs(math.log((other.flop_params if other else 1) / shape.flop_params))

    exact = [e for e in entries if e["shape"] == shape.name and e["device"] == dev_name]
    if exact:
        return make(exact[0])
    same_dev = sorted((e for e in entries if e["device"] == dev_name), key=distance)
    if same_dev and distance(same_dev[0]) < math.log(30):
        return make(same_dev[0], f"the {same_dev[0]['shape']} entry used for {shape.name}")
    same_shape = [e for e in entries if e["shape"] == shape.name]
    for e in same_shape:
        r = make(e, f"{e['device']} entry used for {dev_name}")
        if r:
            return r
    for e in sorted(entries, key=distance):
        r = make(e, f"the {e['shape']} entry on {e['device']} used for {shape.name} on "
                    f"{dev_name}")
        if r:
            return r
    return None


def _shape_of(name: str) -> Shape | None:
    """A shape by its table name, or parsed from an embedded shape's name."""
    s = table()["shapes"].get(name)
    if s:
        return Shape(name, s["layers"], s["hidden"], s["ffn"], s["vocab"], s["tied"],
                     s.get("kv_hidden"), s.get("max_position", 2048), s.get("params"))
    try:
        parts = dict((p[0], int(p[1:])) for p in name.split("-")[1:])
        return Shape(name, parts["l"], parts["h"], parts["f"], parts["v"], tied=True)
    except (KeyError, ValueError):
        return None


def job_seconds(rule: str, dev_name: str) -> tuple[float, str] | None:
    """Fixed seconds of a light job (data preparation, tables, figures...): the table's
    ``jobs`` entry of ``rule`` on ``dev_name``, else on any device."""
    found = [e for e in table()["jobs"] if e["rule"] == rule]
    for e in sorted(found, key=lambda e: e["device"] != dev_name):
        return float(e["seconds"]), _describe(e)
    return None

"""Snakemake `script:` entry (the checkpoint adaptive_select): the checkpoints the adaptive
sweep fine-tunes, from the proxy's ranking (`ckptsweep.analysis.adaptive.select`)."""

import json
import sys

import pandas as pd

from ckptsweep.analysis.adaptive import select
from ckptsweep.files import atomic_write

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (Snakemake's global)
spec = json.loads(snakemake.params.spec)  # noqa: F821
selection = select(pd.read_parquet(snakemake.input.proxy), spec["models"], spec["k"])  # noqa: F821
text = json.dumps(selection, indent=1)
atomic_write(snakemake.output.selection, lambda p: p.write_text(text))  # noqa: F821
for model, chosen in selection["models"].items():
    print(f"{model}: fine-tune checkpoints {chosen['steps']} (top {spec['k']} by the proxy: "
          f"{chosen['top_k']}, and the last, {chosen['last']})")

"""The predictions' parquet schema: the columns of `run.evaluate_model`'s rows
(`PREDICTION_SCHEMA`, `COLUMNS`), of the method ablation's (`ABLATION_SCHEMA`) and of the
prediction cache's (`CACHE_SCHEMA`), and `write_predictions`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd


PREDICTION_SCHEMA = pa.schema([
    ("eval_set", pa.string()),
    ("task", pa.string()),
    ("format", pa.string()),
    ("shots", pa.int64()),
    ("id", pa.string()),
    ("prompt_hash", pa.string()),
    ("demo_ids", pa.list_(pa.string())),
    ("truncated", pa.bool_()),
    ("n_prompt_tokens", pa.int64()),
    ("gold", pa.string()),
    ("prediction", pa.string()),
    ("label_logprobs", pa.list_(pa.float64())),
    ("score", pa.float64()),
    ("score_norm", pa.float64()),
    ("metric", pa.string()),
    ("method", pa.string()),
])
"""Columns of `run.evaluate_model`'s output, typed explicitly so that a file holding only
generation rows (all ``label_logprobs`` empty) has the same schema as any other.
``method``: the classification method, ``loglik`` for multiple choice, ``greedy`` for
generation."""

COLUMNS = tuple(PREDICTION_SCHEMA.names)

ABLATION_SCHEMA = pa.schema([("model", pa.string()), ("step", pa.int64()),
                             ("variant", pa.string()), *PREDICTION_SCHEMA])
"""Predictions of the method ablation (``ckptsweep ablation``): which model family,
checkpoint and variant (``base`` or a fine-tune) made each row, then `COLUMNS`."""

RESULT_COLUMNS = ("prediction", "label_logprobs", "score", "score_norm", "metric", "method")
"""The columns a model call produces (the others describe the prompt)."""

CACHE_SCHEMA = PREDICTION_SCHEMA.append(pa.field("answer_hash", pa.string()))
"""Rows of the prediction cache (`cache.PredictionCache`): `PREDICTION_SCHEMA` and the
hash of the gold answer and the labels, checked before a row is served."""


def write_predictions(frame: pd.DataFrame, path: str | Path,
                      schema: pa.Schema = PREDICTION_SCHEMA) -> None:
    """Write rows of `run.evaluate_model` to parquet with a fixed schema (default
    ``PREDICTION_SCHEMA``; the ablation's ``ABLATION_SCHEMA``)."""
    table = pa.Table.from_pandas(frame[list(schema.names)], schema=schema,
                                 preserve_index=False)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # a killed job never leaves a file that looks finished

"""Scoring one loaded model on eval sets × prompt formats × shot counts, one module per part:

- ``config``: `EvalSet`, `EvalConfig` and the names of their fields' values (plain data,
  imported by the parse-time study layer: no torch, transformers, pandas or pyarrow);
- ``schema``: the predictions' parquet schema and `write_predictions`;
- ``batching``: how many sequences a model call takes (a number, or ``auto``'s token
  budget per device) and the out-of-memory split-and-retry;
- ``logprobs``: the model calls (log-probabilities with prefix sharing, generation);
- ``labels``: label handling (lenient first tokens, the label trie, label words);
- ``items``: the examples of a block: prompts within the context and candidates' tokens;
- ``methods``: the predictions of each method (classification, multiple choice, generation);
- ``cache``: the prediction cache and the checkpoints' fingerprints;
- ``variants``: loading a base or fine-tuned variant with its cache key;
- ``run``: the job's run, `evaluate_model`;
- ``proxy``: the checkpoint advisor's proxy fine-tune job (a fine-tune on a fraction of
  the data and steps, scored on a dev slice of the training split) and its verb.

This file imports nothing, so that importing ``ckptsweep.evaluate.config`` stays light.

May import: ``train`` (the proxy's fine-tuning loop), ``checkpoints``, ``data`` and the
ground floor.
"""

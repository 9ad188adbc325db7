"""Scoring one loaded model on eval sets × prompt formats × shot counts: the evaluation
config, the predictions' schema, log-probabilities (with prefix sharing), label methods,
the prediction cache and the job's run.

May import: ``train`` (nothing yet), ``checkpoints``, ``data`` and the ground floor.
"""

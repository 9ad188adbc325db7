"""From predictions to findings: statistics, the tidy scores table, the AMURO & CHAR
tables and figures, the import of the authors' release, the cross-stage transfer
analysis, compute cost (GPU hours), and the checkpoint advisor (``advisor*``,
``predictors``, ``predictor_sources``, ``ranking``: which checkpoint to fine-tune, and
cheap predictors of it validated against the full grid).

May import: ``evaluate`` (the predictions' schema), ``checkpoints``, ``data`` and the
ground floor. Never the stages above (``attribution``, ``study``).
"""

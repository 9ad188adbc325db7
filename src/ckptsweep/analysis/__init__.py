"""From predictions to findings: statistics, the tidy scores table, the AMURO & CHAR
tables and figures, the import of the authors' release, the cross-stage transfer
analysis, and compute cost (GPU hours).

May import: ``evaluate`` (the predictions' schema), ``checkpoints``, ``data`` and the
ground floor. Never the stages above (``attribution``, ``study``).
"""

"""Parse time: everything the Snakefile needs before any job runs, in pure Python (no
torch, pandas or transformers, so a parse stays fast on a login node and in every job).

Owns the typed study config (`config`), the grid of fine-tunes and evaluations
(`grid`), the transfer population (`transfer`), the job specs the rules pass to the
command line (`specs`), the output names shared with the rules (`names`) and the
cross-reference checks the JSON schema cannot express (`checks`).

May import: the light config and name modules of every stage below it
(``attribution``, ``analysis``, ``evaluate``, ``train``, ``checkpoints``, ``data``), never
their heavy modules.
"""

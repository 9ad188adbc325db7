"""ckptsweep: how pre-training and fine-tuning of language models interact.

One subpackage per stage. Imports run one way, down this list (a test enforces it):

- ``cli``: the one command-line entry point (argparse and dispatch);
- ``operate``: the operator's verbs: the cost plan before submitting, the status board;
- ``study``: parse time, pure Python: the typed study config, the grid, job specs, checks;
- ``attribution``: fact tracing (FTRACE): protocol, data, BM25, TracIn, embeddings, report;
- ``analysis``: statistics, scores, AMURO & CHAR tables and figures, transfer, cost;
- ``evaluate``: scoring one loaded model: config, log-probabilities, methods, cache, run;
- ``train``: pre-training, fine-tuning (one loop, one process or sharded), distributed;
- ``checkpoints``: the checkpoint manifest, loading and saving models, hub revisions;
- ``data``: synthetic world, hub adapters, snapshots, tasks, prompts, tokenizer;
- the ground floor, which imports no other part: ``files`` (jsonl, atomic writes),
  ``errors`` (the config error naming its key), ``device`` (device and threads),
  ``progress`` (progress lines).
"""

__version__ = "0.1.0"

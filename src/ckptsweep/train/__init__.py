"""Training: pre-training the embedded default's tiny models, and fine-tuning with the
loss on the completion only, in one loop that runs in one process or sharded over
several (FSDP2).

Fine-tuning, one concern a module: ``config`` (the settings, no torch import), ``examples``
(tokenised examples and batches), ``loss``, ``loop`` (the loop and its entry points),
``strategy`` (one process or sharded: what differs), ``distributed`` (torchrun and FSDP2),
``state`` and ``shards`` (the resume state), ``stopping`` (SIGTERM, Slurm's time limit),
``throughput``. Pre-training: ``pretrain``.

May import: ``checkpoints``, ``data`` and the ground floor.
"""

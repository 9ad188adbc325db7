"""Training: pre-training the embedded default's tiny models, and fine-tuning with the
loss on the completion only, in one loop that runs in one process or sharded over
several (FSDP2).

May import: ``checkpoints``, ``data`` and the ground floor.
"""

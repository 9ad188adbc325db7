"""Fact tracing (FTRACE, Akyürek et al. 2022): which training examples taught a model a
fact. The protocol (candidate sets, metrics), its data from the world, BM25, TracIn and
embedding scores, the traced run of one model and slice, and the table and figure.

May import: ``analysis`` (statistics), ``train`` (fine-tuning, pre-training schedule),
``checkpoints``, ``data`` and the ground floor.
"""

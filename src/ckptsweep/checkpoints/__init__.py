"""Checkpoints: the manifest (step, tokens, revision, source) every later job loads
through, loading and saving models, and resolving a hub model's steps to revisions.

May import: ``data`` and the ground floor.
"""

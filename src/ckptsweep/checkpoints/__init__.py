"""Checkpoints: the manifest (step, tokens, revision, source) every later job loads
through (``manifest``), loading and saving models (``load``), resolving a hub model's steps
to revisions (``revisions``, pure) and the hub side: pinning a manifest to commits and
prefetching the model files into the cache (``hub``).

May import: ``data`` and the ground floor.
"""

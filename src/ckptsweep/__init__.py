"""ckptsweep: how pre-training and fine-tuning of language models interact."""

__version__ = "0.1.0"

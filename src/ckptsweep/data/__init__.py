"""Data: the synthetic world (the embedded default), the adapters from the real hub
datasets' schemas to canonical records, dataset snapshots, task types, prompt formats
and the tokenizer trained for the world.

May import: the ground floor only.
"""

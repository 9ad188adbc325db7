"""The error a job or a parse raises for a bad config value: it carries the key path as
the user wrote it (``models.tiny.steps[3]``), so every message names what to fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot be used; ``key`` is its path in the config file."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def build(cls, data: dict, where: str):
    """A config dataclass from a block of a job spec; an unknown key is a ConfigError
    naming it (``world.n_peple``) and the known ones."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key(s) {unknown} in {where}; "
                                                   f"known: {sorted(names)}")
    return cls(**data)

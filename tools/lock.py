"""requirements.lock: the CPU environment's fully pinned versions (see the Makefile).

    python tools/lock.py freeze requirements.lock          # write it from this environment
    python tools/lock.py check-installed requirements.lock # this environment == the lock
    python tools/lock.py check requirements.lock           # pyproject.toml and envs/ agree
    python tools/lock.py diff requirements.lock OTHER      # what a newer install changed

Written by hand because pip has no installable lock format yet (``pip lock`` writes
pylock.toml, which ``pip install`` cannot read), and pip-tools would resolve without
installing: freezing a real, tested install is the most faithful lock.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
HEADER = """\
# The CPU environment of `make setup`, `make demo`, `make test` and CI, every package
# pinned (written by `make lock` from a fresh install of the newest versions that
# pyproject.toml allows; torch is the CPU build on local disk). envs/*.yaml pin the same
# versions; tests/test_lock.py checks both against pyproject.toml.
"""


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock or ``pip freeze`` file; errors name the line."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name or not version:
            raise ValueError(f"{path}:{n}: expected 'name==version', got {raw!r}")
        key = canonicalize_name(name)
        if key in pins:
            raise ValueError(f"{path}:{n}: {name} is pinned twice")
        pins[key] = version.split("+", 1)[0]  # 2.13.0+cpu: the local label is a build
    return pins


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The project's dependencies and every optional extra's, as written in pyproject."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def env_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of the exact pins (``name==version``) in a conda env file."""
    pins = {}
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else []:
            req = Requirement(item)
            spec = str(req.specifier)
            if not spec.startswith("==") or "*" in spec or "," in spec:
                raise ValueError(f"{path}: {item!r} is not an exact pin (name==version)")
            pins[canonicalize_name(req.name)] = spec[2:]
    return pins


def problems(lock: Path) -> list[str]:
    """Where pyproject.toml or envs/*.yaml disagree with the lock (empty: they agree)."""
    pins = read_lock(lock)
    out = []
    for req in project_requirements():
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            out.append(f"pyproject.toml requires {req} but {lock.name} has no {req.name}")
        elif Version(version) not in req.specifier:
            out.append(f"pyproject.toml requires {req} but {lock.name} pins {version}")
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        for name, version in env_pins(env).items():
            if pins.get(name) != version:
                out.append(f"envs/{env.name} pins {name}=={version} but {lock.name} "
                           f"{'pins ' + pins[name] if name in pins else 'has no ' + name}")
    return out


def freeze(lock: Path) -> None:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all",
                             "--exclude-editable"], check=True, capture_output=True,
                            text=True).stdout
    lines = sorted((line.split("+", 1)[0] for line in frozen.splitlines()
                    if line and not line.lower().startswith("ckptsweep==")), key=str.lower)
    lock.write_text(HEADER + "\n".join(lines) + "\n")


def check_installed(lock: Path) -> list[str]:
    """Where this environment differs from the lock."""
    out = []
    for name, version in read_lock(lock).items():
        try:
            have = md.version(name).split("+", 1)[0]
        except md.PackageNotFoundError:
            out.append(f"{name}=={version} is locked but not installed")
            continue
        if have != version:
            out.append(f"{name}: locked {version}, installed {have}")
    return out


def main(argv: list[str]) -> int:
    verb, lock = argv[0], Path(argv[1])
    if verb == "freeze":
        freeze(lock)
        return 0
    if verb == "diff":
        old, new = read_lock(lock), read_lock(Path(argv[2]))
        changed = [f"  {n}: {old.get(n, '-')} -> {new.get(n, '-')}"
                   for n in sorted(old.keys() | new.keys()) if old.get(n) != new.get(n)]
        print(f"{len(changed)} packages differ from {lock.name}" + (":" if changed else ""))
        print("\n".join(changed))
        return 0
    found = {"check": problems, "check-installed": check_installed}[verb](lock)
    for line in found:
        print(f"{lock.name}: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

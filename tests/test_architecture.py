"""The package's architecture: one subpackage per stage, imports one way down the stages,
no import circles, small modules (see ``src/ckptsweep/__init__.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "ckptsweep"
# Top to bottom: a module may import from its own part and from the parts below it.
LAYERS = ["cli", "operate", "study", "attribution", "analysis", "evaluate", "train", "checkpoints",
          "data", "ground"]
GROUND = {"files", "device", "progress", "errors", "__init__"}
MAX_LINES = 400


def part(module: str) -> str:
    """cli, a stage's subpackage, or ground, for ``ckptsweep.x.y``."""
    first = module.split(".")[1] if "." in module else "__init__"
    return "ground" if first in GROUND else first


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every ckptsweep module ``name`` imports, at module level or inside a function."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ckptsweep")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + is_pkg]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("ckptsweep"):
                continue
            known = modules()
            subs = {f"{mod}.{a.name}" for a in node.names} & set(known)
            found |= subs or {mod}
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(name, path) if m in mods} for name, path in mods.items()}


def test_every_part_is_a_layer():
    parts = {part(m) for m in modules()}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def upward(g: dict[str, set[str]]) -> list[str]:
    """Every import from a part to a part above it."""
    return sorted(f"{n} imports {d} ({part(n)} -> {part(d)}, up the stages)"
                  for n, deps in g.items() for d in deps
                  if LAYERS.index(part(d)) < LAYERS.index(part(n)))


def circles(g: dict[str, set[str]]) -> list[str]:
    """Every module that reaches itself through imports."""
    out = []
    for start in g:
        seen, todo = set(), list(g[start])
        while todo:
            m = todo.pop()
            if m == start:
                out.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo += g.get(m, ())
    return sorted(out)


def test_imports_run_down_the_stages():
    found = upward(graph())
    assert not found, "\n".join(found)


def test_ground_floor_imports_no_other_part():
    bad = [f"{n} imports {d}" for n, deps in graph().items() if part(n) == "ground"
           for d in deps if part(d) != "ground"]
    assert not bad, bad


def test_no_import_circles():
    found = circles(graph())
    assert not found, f"modules on an import circle: {found}"


def test_the_checks_can_fail():
    """A data module importing the study layer is an upward arrow; two modules importing
    each other are a circle."""
    assert upward({"ckptsweep.data.x": {"ckptsweep.study.grid"}}) == [
        "ckptsweep.data.x imports ckptsweep.study.grid (data -> study, up the stages)"]
    assert upward({"ckptsweep.study.grid": {"ckptsweep.data.x", "ckptsweep.files"}}) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]


def test_subpackages_say_what_they_own_and_may_import():
    for init in PKG.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(PKG)}: its docstring must say what " \
                                    "it owns and which parts it may import"


def test_modules_stay_small():
    big = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"

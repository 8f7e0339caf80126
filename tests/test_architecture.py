"""The layering of docs/architecture.md holds: no module imports one in a higher layer, no import cycles
between modules, every module imports, and no file grows past the size limit.

The layer table is read from docs/architecture.md itself (its rows ``| N | `arpg.x`, ... |``), so the page
and this test cannot drift apart. Imports are read with :mod:`ast` (module level and inside functions).
"""

from __future__ import annotations

import ast
import importlib
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DOC = REPO / "docs" / "architecture.md"
MAX_LINES = 400


def layer_table(doc: Path = DOC) -> dict[str, int]:
    """``{"arpg.util": 0, ...}`` from the rows of the layer table."""
    table = {}
    for line in doc.read_text().splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|(.*?)\|", line)
        if m:
            for name in re.findall(r"`(arpg[\w.]*)`", m.group(2)):
                table[name] = int(m.group(1))
    return table


def source_modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for p in sorted((src / "arpg").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imported_modules(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``[(module, line, inside_a_function), ...]`` of this package's modules that ``name`` imports."""
    tree = ast.parse(path.read_text())
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            pkg = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(pkg + ([node.module] if node.module else [])) if node.level else (node.module or "")
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package itself.
            candidates = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        seen = set()
        for cand in candidates:
            parts = cand.split(".")
            for i in range(len(parts), 0, -1):
                mod = ".".join(parts[:i])
                if mod in mods:
                    if mod != name and mod not in seen:
                        seen.add(mod)
                        found.append((mod, node.lineno, id(node) in nested))
                    break
    return found


def layer_of(module: str, table: dict[str, int]) -> int | None:
    best = None
    for prefix, layer in table.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def upward_imports(src: Path = SRC, table: dict[str, int] | None = None) -> list[str]:
    table = layer_table() if table is None else table
    mods = source_modules(src)
    bad = []
    for name, path in mods.items():
        if name == "arpg":  # the public API re-exports from every layer; nothing inside imports it
            continue
        mine = layer_of(name, table)
        for target, line, _ in imported_modules(name, path, mods):
            theirs = layer_of(target, table)
            if target == "arpg" or (mine is not None and theirs is not None and theirs > mine):
                bad.append(f"{path.relative_to(src)}:{line} ({name}, layer {mine}) imports {target} (layer {theirs})")
    return bad


def import_cycles(src: Path = SRC) -> list[list[str]]:
    """Strongly connected groups of more than one module (package ``__init__`` files left out: they only
    re-export what lies below them)."""
    mods = source_modules(src)
    graph = defaultdict(set)
    for name, path in mods.items():
        if path.name == "__init__.py":
            continue
        for target, _, _ in imported_modules(name, path, mods):
            if mods[target].name != "__init__.py":
                graph[name].add(target)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(mods):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_a_layer():
    table = layer_table()
    missing = [m for m in source_modules() if m != "arpg" and layer_of(m, table) is None]
    assert not missing, f"modules outside every layer of docs/architecture.md: {missing}"


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_no_import_cycles():
    assert import_cycles() == []


def test_no_file_over_the_size_limit():
    big = {str(p.relative_to(SRC)): n for p in source_modules().values()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"files over {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("name", [m for m in source_modules() if not m.endswith("__main__")])
def test_every_module_imports(name):
    importlib.import_module(name)


#: Modules of the network package that still call the decoding speed-ups (packed and fused weights) directly.
#: The network should know nothing of how it is run fast; this list may only shrink.
SPEED_UPS = ("arpg.speedups", "arpg.sampling")


def test_the_network_package_knows_no_speed_up_and_no_decoding_runtime():
    """The network is only the network: nothing under arpg/model imports the speed-ups or the sampling package,
    branches on being compiled, or sets attributes on modules from outside."""
    mods = source_modules()
    for name, path in mods.items():
        if name == "arpg.model" or name.startswith("arpg.model."):
            for target, line, _ in imported_modules(name, path, mods):
                assert not target.startswith(SPEED_UPS), f"{path.name}:{line} imports {target}"
            text = path.read_text()
            assert "is_compiling" not in text, f"{path.name} branches on torch.compiler.is_compiling()"
            assert "__dict__[" not in text, f"{path.name} stores hidden state in a module's __dict__"

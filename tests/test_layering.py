"""The package's import structure: no import cycle between its modules, and the layers of
``s3prl_speechprompt/__init__.py``'s docstring hold (each layer imports only the layers before it).

Read from the source with ``ast`` (nothing is imported or run); imports inside functions count too, since a
deferred import still ties the two modules together.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "s3prl_speechprompt"
NAME = PKG.name

# the docstring's layers, bottom first; a module's layer is that of its first component under the package
LAYERS = [
    {"errors"},
    {"atomic", "compat", "safe_globals", "precision", "schedules", "runlock", "readers"},
    {"ulm"},
    {"lm_ref"},
    {"prompt"},
    {"units"},
    {"tasks", "predictions", "record"},
    {"trained"},
    {"s3prl_plugin", "engine", "synth", "analysis", "report"},
    {"serve"},
    {"commands", "cli", "__main__"},
]
# (importer, imported) components of one layer that may import each other; the back ends of layer 5 do not
SAME_LAYER_OK = {("__main__", "cli"), ("cli", "commands")}


def _modules() -> dict:
    mods = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(path: Path, mods: dict) -> set:
    """Package modules ``path`` imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in mods}
    return out


def _graph() -> dict:
    mods = _modules()
    return {name: _imports(path, mods) - {name} for name, path in mods.items()}


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(module: str) -> int:
    comp = _component(module)
    for i, layer in enumerate(LAYERS):
        if comp in layer:
            return i
    raise AssertionError(f"{module}: {comp!r} is in no layer of tests/test_layering.py LAYERS (and of the package "
                         f"docstring); add it where it belongs")


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_lower_layers():
    bad = []
    for src, targets in _graph().items():
        if src == NAME:
            continue
        for dst in targets:
            if dst == NAME:        # the package itself holds only __version__
                continue
            a, b = _layer(src), _layer(dst)
            same = _component(src) == _component(dst)
            if b > a or (b == a and not same and (_component(src), _component(dst)) not in SAME_LAYER_OK):
                bad.append(f"{src} -> {dst}")
    assert bad == [], "imports against the layering of s3prl_speechprompt/__init__.py:\n" + "\n".join(sorted(bad))

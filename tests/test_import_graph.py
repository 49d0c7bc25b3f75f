"""The package's layers hold (issue #26): every import goes down, and no modules import each other.

The import graph is read from the source with ``ast``: module-level and function-local imports
(and those under ``TYPE_CHECKING``) alike, ``from . import`` resolved, an import naming a submodule
counted as an import of that submodule (not of its package's ``__init__``).  ``LAYERS`` is the
architecture as data, lowest first: a module may import its own layer and those below it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import mergekit_awd

PACKAGE = Path(mergekit_awd.__file__).parent
ROOT = "mergekit_awd"

# (layer, its top-level modules and subpackages), lowest first
LAYERS: List[Tuple[str, List[str]]] = [
    ("foundations", ["errors", "constants", "results", "code_version", "progress", "hub_ids"]),
    ("core", ["core"]),  # the numerical methods, free of mergekit
    ("mergekit_adapter", ["mergekit_adapter"]),  # the methods on mergekit: their card parts are data
    ("presentation", ["presentation"]),  # the card, its figures, heatmaps, tune's summaries
    ("pipeline", ["pipeline"]),  # run_merge: validation, staging, the report and card written
    ("tools", ["tools"]),  # inspect, compress, tune
    ("hub", ["hub"]),  # publishing a finished merge
    ("cli", ["cli"]),
]
# the package's own ``__init__`` (the public API) and the test helpers may import any layer
ANYWHERE = ["", "testing"]

Graph = Dict[str, Set[str]]


def module_name(path: Path, root: Path) -> str:
    """``core/awd.py`` → ``core.awd``; a package's ``__init__.py`` → the package (the root's: ``""``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(name: str, modules: Set[str]) -> Optional[str]:
    """The module (or package) of the graph that the dotted ``name`` inside the package names."""
    while name not in modules:
        if not name:
            return None
        name = name.rpartition(".")[0]
    return name


def _imported(node: ast.AST, importer: str, is_package: bool, root: str) -> List[str]:
    """The dotted names (relative to ``root``) an import statement brings in, most specific first."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = importer.split(".") if importer else []
            base = base if is_package else base[:-1]
            base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
            module = ".".join([root, *base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        names = [f"{module}.{alias.name}" for alias in node.names]
    else:
        return []
    inside = [n for n in names if n == root or n.startswith(root + ".")]
    return [n[len(root) + 1:] for n in inside]


def import_graph(root: Path, package: str = ROOT) -> Graph:
    """module → the package's modules it imports (anywhere in its source)."""
    paths = {module_name(p, root): p for p in root.rglob("*.py") if "__pycache__" not in p.parts}
    modules = set(paths)
    graph: Graph = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for imported in _imported(node, name, is_package, package):
                target = _target(imported, modules)
                if target is not None and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer_of(module: str, layers: Sequence[Tuple[str, List[str]]]) -> Optional[int]:
    """The rank of the module's layer (0: lowest); ``len(layers)`` for ``ANYWHERE``; None if unplaced."""
    top = module.split(".")[0]
    if top in ANYWHERE:
        return len(layers)
    return next((rank for rank, (_, tops) in enumerate(layers) if top in tops), None)


def upward_imports(graph: Graph, layers: Sequence[Tuple[str, List[str]]]) -> List[str]:
    """``importer → imported`` for every import of a higher layer (``ANYWHERE`` importers excepted)."""
    found = []
    for importer, targets in sorted(graph.items()):
        rank = layer_of(importer, layers)
        if rank is None or importer.split(".")[0] in ANYWHERE:
            continue
        for target in sorted(targets):
            if (layer_of(target, layers) or 0) > rank:
                found.append(f"{importer} ({layers[rank][0]}) → {target or ROOT}")
    return found


def cycles(graph: Graph) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


# --------------------------------------------------------------------------- the package


def test_every_module_has_a_layer():
    unplaced = [m for m in sorted(import_graph(PACKAGE)) if layer_of(m, LAYERS) is None]
    assert unplaced == [], f"place these modules in a layer of LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(PACKAGE), LAYERS) == []


def test_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


# --------------------------------------------------------------------------- the checks themselves


def _package(root: Path, files: Dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / ROOT


def test_the_checks_find_function_local_relative_upward_imports_and_cycles(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "from mergekit_awd.cli import main\n",
        "errors.py": "",
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from ..cli import run\n",  # upward, function-local, relative
        "core/b.py": "from . import c\n",
        "core/c.py": "import mergekit_awd.core.b\n",  # b ↔ c
        "cli/__init__.py": "from mergekit_awd import errors\nfrom .run import go\n",
        "cli/run.py": "from mergekit_awd.core.a import f\n",
    })
    graph = import_graph(package)
    assert graph["core.a"] == {"cli.run"} and graph["core.b"] == {"core.c"} and graph["cli"] == {"errors", "cli.run"}
    assert upward_imports(graph, LAYERS) == ["core.a (core) → cli.run"]
    assert cycles(graph) == [["cli.run", "core.a"], ["core.b", "core.c"]]

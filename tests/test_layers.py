"""The import contract: jepalab's first-level units import one way (docs/architecture.md).

Every ``import`` / ``from ... import`` of a ``jepalab`` module is read from the source,
including imports inside functions (a lazy import is still a dependency), so a new edge that
points up a layer or closes a cycle fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import jepalab

PACKAGE = Path(jepalab.__file__).parent

# Lowest first. A unit may import its own layer's units and every lower layer's, never a
# higher one; within a layer the imports must not form a cycle (checked below).
LAYERS: list[set[str]] = [
    # core: no jepalab component, only each other
    {"errors", "ragged", "specs", "progress", "registry", "device", "config", "checkpoint"},
    {"kernels"},  # attention kernels
    {"models", "masks", "data", "envs"},  # components, each built from its config section
    {"methods"},  # JEPA objectives composed of components; the method builders
    {"train", "runs"},  # the one Trainer; reloading what it wrote
    {"eval", "planning", "interop"},  # what uses trained models
    {"cli"},  # commands
]
TOP = "__init__"  # jepalab/__init__.py: the public API, may re-export any layer


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else TOP


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported jepalab module, line)`` of every import in ``path``, relative ones resolved."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "jepalab":  # from jepalab import models
                found += [(f"jepalab.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name.startswith("jepalab.")]


def _edges() -> dict[tuple[str, str], list[str]]:
    """``{(from unit, to unit): ["file:line imports module", ...]}`` across units."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(_module_of(path)) if _module_of(path) != "jepalab" else TOP
        for target, line in _imports(path):
            unit = _unit(target)
            if unit != source:
                where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
                edges[(source, unit)].append(where)
    return edges


def _layer_of() -> dict[str, int]:
    return {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_first_level_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    units = {u for u in units if not u.startswith(("_", ".")) and u not in ("py", "configs")}
    units = {u for u in units if (PACKAGE / u).is_dir() or (PACKAGE / f"{u}.py").is_file()}
    assert units - _layer_of().keys() == set(), "add new units to LAYERS (and architecture.md)"


def test_no_import_points_up_a_layer():
    layer = _layer_of()
    upward = [
        f"{a} (layer {layer[a]}) -> {b} (layer {layer[b]}): {sites[0]}"
        for (a, b), sites in _edges().items()
        if a != TOP and b in layer and a in layer and layer[b] > layer[a]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycle_between_first_level_units():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in _edges():
        if TOP not in (a, b):
            graph[a].add(b)
    cycles = []
    for start in list(graph):  # a path back to ``start``: a cycle through it
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    edges = _edges()
    detail = [f"{c}: {edges[tuple(c.split(' -> ')[:2])][0]}" for c in cycles]  # type: ignore[index]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_the_contract_reads_lazy_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function counts."""
    src = PACKAGE / "cli" / "collect.py"
    targets = {name for name, _ in _imports(src)}
    assert "jepalab.envs.gym_collect" in targets  # imported inside collect()


def test_the_dispatch_table_names_commands_of_the_cli_layer():
    """The table names its modules as strings, which the reader above cannot see: each is
    a module of ``jepalab.cli`` (no hidden edge) with the function it names."""
    from jepalab.cli.dispatch import COMMANDS, EVAL_COMMANDS, resolve

    for target in [*COMMANDS.values(), *EVAL_COMMANDS.values()]:
        assert target.startswith("jepalab.cli."), target
        assert callable(resolve(target)), target

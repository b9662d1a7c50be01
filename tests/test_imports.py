"""The import graph of probekit's modules: no cycle, and the one-way flow of the README's diagram.

The graph is built from the module-level imports of every ``probekit/**/*.py`` (``ast``, nothing is
imported); an import inside a function is left out, which is why each such import must say in a
comment which cost or which cycle keeps it there.
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "probekit"

# Modules every stage may import: errors, paths, hashing, atomic writes, argument checks, the ActivationSet
# container, the study container and its expected rows (loaded by name, so the runner can read a study's
# experiments). They import no stage module.
FOUNDATION = {"errors", "atomic", "checks", "hashing", "registry", "activations", "text", "expected", "studies"}

# The README's flow (section "Library"): stimuli -> extraction (+ store) -> probes (+ stats) -> profiles ->
# claim -> report / cli. A module may import its own stage, an earlier one, or the foundation; never a later one.
STAGES = [
    {"stimuli", "experiments"},
    {"extraction", "store", "streaming", "models", "adapters", "interop", "placement", "weights", "checkpoint",
     "llama3", "testing"},
    {"stats", "design", "solver", "results", "probes", "transfer", "pipeline", "cost"},
    {"profiles", "simulate"},
    {"claim", "calibration", "studies.bogdan2025", "studies.bogdan2025.claims", "studies.bogdan2025.experiments",
     "studies.bogdan2025.paper", "studies.bogdan2025.untrained"},
    {"report", "cli", "__main__"},
]


def _name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)          # "" is the package itself


def _module_level_imports(tree: ast.Module):
    """Import statements not inside a function or class (module-level ``if``/``try`` blocks included)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports at module level}``, names relative to ``probekit`` ("" = the package)."""
    files = {_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        here = mod.split(".") if mod else []
        if path.name != "__init__.py":
            here = here[:-1]
        deps = set()
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
                bases = [t.split(".", 1)[1] if "." in t else "" for t in targets if t.split(".")[0] == "probekit"]
                deps.update(bases)
                continue
            if node.level:
                base = here[:len(here) - (node.level - 1)] + ([node.module] if node.module else [])
                base = ".".join(base)
            elif node.module and node.module.split(".")[0] == "probekit":
                base = node.module.partition(".")[2]
            else:
                continue
            for alias in node.names:        # `from . import stats` imports a module, `from .x import f` a name
                sub = f"{base}.{alias.name}" if base else alias.name
                deps.add(sub if sub in files else base)
        graph[mod] = deps - {mod}
    return graph


GRAPH = import_graph()


def test_the_graph_sees_known_edges():
    """The parser resolves relative, package-relative and absolute imports (a broken parser finds no cycle)."""
    assert "probes" in GRAPH["pipeline"]                     # from .probes import ...
    assert "stats" in GRAPH["design"]                        # from . import stats
    assert "profiles" in GRAPH["studies.bogdan2025.claims"]  # from probekit import profiles as P
    assert "expected" in GRAPH["studies.bogdan2025.paper"]   # from probekit.expected import ...
    assert "" in GRAPH["expected"]                           # from . import __version__ (the package)
    assert "studies.bogdan2025.claims" in GRAPH["studies.bogdan2025"]      # from .claims import ...
    assert "streaming" not in GRAPH["extraction"]            # function-level imports are not module-level


def test_no_import_cycle():
    try:
        order = list(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle among probekit's modules: {' -> '.join(exc.args[1])}")
    assert set(order) >= set(GRAPH)


def test_a_cycle_is_found(tmp_path):
    """The check above can fail: two modules importing each other at module level."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import y\nfrom . import a\n")
    (tmp_path / "c.py").write_text("from .b import f\n")
    graph = import_graph(tmp_path)
    assert graph["a"] == {"b"} and graph["b"] == {"a"} and graph["c"] == {"b"}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_every_module_has_a_place_in_the_flow():
    placed = FOUNDATION.union(*STAGES) | {""}
    assert not FOUNDATION & set().union(*STAGES)
    assert sorted(set(GRAPH) - placed) == [], "add the new module to FOUNDATION or a stage here and in README.md"


def test_data_flows_one_way():
    stage = {m: i for i, mods in enumerate(STAGES) for m in mods}
    backwards = [f"{m} (stage {stage[m]}) imports {d} (stage {stage[d]})"
                 for m, deps in GRAPH.items() if m in stage for d in deps if d in stage and stage[d] > stage[m]]
    assert backwards == []
    into_stages = [f"{m} imports {sorted(deps & set(stage))}" for m, deps in GRAPH.items()
                   if m in FOUNDATION and deps & set(stage)]
    assert into_stages == [], "foundation modules must not import a stage"


def test_readme_diagram_names_the_stages_in_this_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    diagram = readme.split("Data flows one way", 1)[1].split("```", 2)[1]
    heads = ["probekit.stimuli", "probekit.extraction", "probekit.probes", "probekit.profiles", "probekit.claim",
             "probekit.report"]
    positions = [diagram.find(h) for h in heads]
    assert -1 not in positions and positions == sorted(positions), positions
    for i, head in enumerate(heads):
        assert head.split(".")[1] in STAGES[i]

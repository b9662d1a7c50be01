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

# The subpackages in the order data flows through them (docs/architecture.md): a module may import its own
# subpackage, an earlier one or the foundation (stage 0), never a later one. The foundation is ``core`` (errors,
# atomic writes, checks, hashing, text, ActivationSet, cost, expected rows), the study registry
# (``studies/__init__``: a study's container and where its data live) and the old-path aliases (``_compat``).
STAGES = ["core", "stimuli", "models", "extraction", "probes", "profiles", "claims", "report", "pipeline",
          "studies.bogdan2025"]
FOUNDATION = {"_compat", "studies"}
TOP = {"cli": "pipeline", "__main__": "pipeline"}     # the command line sits with the runner


def stage_of(mod: str) -> int | None:
    """The stage index of a module name relative to ``probekit`` ("" = the package itself: no stage)."""
    if mod == "":
        return None
    if mod in FOUNDATION or mod.split(".")[0] == "core":
        return 0
    if mod == "studies.bogdan2025" or mod.startswith("studies.bogdan2025."):
        return STAGES.index("studies.bogdan2025")
    head = TOP.get(mod, mod.split(".")[0])
    return STAGES.index(head) if head in STAGES else None


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
    assert "probes.grid" in GRAPH["pipeline"]                          # from probekit.probes.grid import ...
    assert "probes.stats" in GRAPH["probes.design"]                    # from probekit.probes import stats
    assert "probes.solver" in GRAPH["probes"]                          # from .solver import ... (the package)
    assert "profiles.metrics" in GRAPH["studies.bogdan2025.claims"]    # from probekit.profiles import metrics as P
    assert "core.expected" in GRAPH["studies.bogdan2025.paper"]        # from probekit.core.expected import ...
    assert "" in GRAPH["core.expected"]                                # from probekit import __version__
    assert "studies.bogdan2025.claims" in GRAPH["studies.bogdan2025"]  # from .claims import ...
    assert "extraction.streaming" not in GRAPH["extraction.forward"]   # function-level imports are not module-level


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
    unplaced = sorted(m for m in GRAPH if m and stage_of(m) is None)
    assert unplaced == [], "put the new module in a stage subpackage, or add it to STAGES/FOUNDATION here"


def test_ls_probekit_shows_the_stages():
    """The stages are the subpackages: nothing but the runner, the CLI and the compat aliases on the top floor."""
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert top == sorted(["__init__.py", "__main__.py", "_compat.py", "cli.py", "pipeline.py", "studies"]
                         + [s for s in STAGES if "." not in s and s != "pipeline"]), top


def test_data_flows_one_way():
    backwards = [f"{m} (stage {stage_of(m)}) imports {d} (stage {stage_of(d)})"
                 for m, deps in GRAPH.items() if stage_of(m) is not None
                 for d in deps if stage_of(d) is not None and stage_of(d) > stage_of(m)]
    assert backwards == []


def test_architecture_diagram_names_the_stages_in_this_order():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    diagram = doc.split("Data flows one way", 1)[1].split("```", 2)[1]
    heads = [f"probekit.{s}" for s in STAGES if s not in ("core", "pipeline", "studies.bogdan2025")]  # core: a footnote
    positions = [diagram.find(h + "/") for h in heads]
    assert -1 not in positions and positions == sorted(positions), dict(zip(heads, positions))

"""The import graph of probekit's modules: no cycle, and the one-way flow of docs/architecture.md's diagram.

The graph is built from every probekit import of every ``probekit/**/*.py`` (``ast``, nothing is imported),
those inside functions included: a function-level import hides a cycle from the interpreter until the
function runs, never from this graph. A probekit import inside a function must also be in :data:`LAZY`, with
the reason it is there.
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
# the command line sits with the runner; the causal runner after the probes (it extracts under interventions
# and probes one layer per set; claims read its data and the report draws it)
TOP = {"cli": "pipeline", "__main__": "pipeline", "causal": "profiles"}


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


#: The probekit imports allowed inside a function, ``(module, imported module): why``. Every other
#: probekit import is at module level, where a reader (and Python) sees it at once. The graph counts these too.
LAZY = {
    # a script of the study's data folder, run by hand: probekit is imported when it runs
    ("studies.bogdan2025.stimuli.extraction_cost", "extraction.forward"): "a script: imports when run",
    ("studies.bogdan2025.stimuli.extraction_cost", ""): "a script: imports when run",
    # the numpy probe backend needs nothing of the model stage: its GPU count only for a torch backend
    ("probes.solver", "models.placement"): "only for a torch backend",
    # scipy.signal (simulate's AR filter) only for the simulated null of ar1_shift
    ("profiles.metrics", "profiles.simulate"): "cost: scipy.signal only for the simulated null",
}


def _imports(tree: ast.Module, lazy: bool | None = None):
    """Import statements: ``lazy=False`` those at module level (module-level ``if``/``try`` blocks included),
    ``True`` those inside a function, ``None`` all of them."""
    todo = [(n, False) for n in tree.body]
    while todo:
        node, in_function = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if lazy is None or lazy == in_function:
                yield node
            continue
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        todo.extend((c, inside) for c in ast.iter_child_nodes(node))


def import_graph(package: Path = PACKAGE, lazy: bool | None = None) -> dict[str, set[str]]:
    """``{module: probekit modules it imports}``, names relative to ``probekit`` ("" = the package);
    ``lazy``: as in :func:`_imports` (default: every import, function-level ones included)."""
    files = {_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        here = mod.split(".") if mod else []
        if path.name != "__init__.py":
            here = here[:-1]
        deps = set()
        for node in _imports(ast.parse(path.read_text(), str(path)), lazy):
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
FUNCTION_LEVEL = import_graph(lazy=True)


def test_the_graph_sees_known_edges():
    """The parser resolves relative, package-relative and absolute imports (a broken parser finds no cycle)."""
    assert "probes.grid" in GRAPH["pipeline"]                          # from probekit.probes.grid import ...
    assert "probes.stats" in GRAPH["probes.design"]                    # from probekit.probes import stats
    assert "probes.solver" in GRAPH["probes"]                          # from .solver import ... (the package)
    assert "profiles.metrics" in GRAPH["studies.bogdan2025.claims"]    # from probekit.profiles import metrics as P
    assert "core.expected" in GRAPH["studies.bogdan2025.paper"]        # from probekit.core.expected import ...
    assert "core.version" in GRAPH["core.expected"]                    # from probekit.core.version import __version__
    assert "studies.bogdan2025.claims" in GRAPH["studies.bogdan2025"]  # from .claims import ...
    assert "profiles.simulate" in GRAPH["profiles.metrics"]            # inside a function: counted too
    assert "profiles.simulate" in FUNCTION_LEVEL["profiles.metrics"]


def test_no_import_cycle():
    try:
        order = list(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as exc:
        pytest.fail("import cycle among probekit's modules: " + " -> ".join(f"probekit.{m}" if m else "probekit" for m in exc.args[1]))
    assert set(order) >= set(GRAPH)


def test_a_cycle_is_found(tmp_path):
    """The check above can fail: a cycle whose way back is an import inside a function (the shape of the
    0.2 cycle forward -> streaming -> forward) is a cycle of the graph."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import y\n    return y\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path)
    assert graph["a"] == {"b"} and graph["b"] == {"c"} and graph["c"] == {"a"}
    assert import_graph(tmp_path, lazy=False)["b"] == set()      # what the module-level-only graph saw
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())
    list(graphlib.TopologicalSorter(import_graph(tmp_path, lazy=False)).static_order())    # no cycle there


def test_every_function_level_import_is_listed_with_its_reason():
    found = {(m, d) for m, deps in FUNCTION_LEVEL.items() for d in deps}
    assert sorted(found - set(LAZY)) == [], "move the import to module level, or add it to LAZY with its reason"
    assert sorted(set(LAZY) - found) == [], "LAZY lists an import that is no longer inside a function"


def test_every_module_has_a_place_in_the_flow():
    unplaced = sorted(m for m in GRAPH if m and stage_of(m) is None)
    assert unplaced == [], "put the new module in a stage subpackage, or add it to STAGES/FOUNDATION here"


def test_ls_probekit_shows_the_stages():
    """The stages are the subpackages: nothing but the runner, the CLI and the compat aliases on the top floor."""
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert top == sorted(["__init__.py", "__main__.py", "_compat.py", "cli.py", "pipeline.py", "causal.py", "studies"]
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

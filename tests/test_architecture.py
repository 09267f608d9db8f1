"""The house's floors, read from the source (imports inside functions count): no import
circle inside tfllm/, the shared machinery imports no task, and the layers and models
import no TensorFlow."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfllm"
# Entry points above the tasks: they ask the registry which task a model belongs to.
ENTRY_POINTS = {"tfllm.export", "tfllm.chat", "tfllm.serve", "tfllm.suite"}


def module_names():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph():
    """{module: modules of tfllm it imports}, a child's import of its own parents left out
    (Python runs a package's __init__ before its modules anyway)."""
    names = module_names()
    graph = {}
    for module, path in names.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in found:
                while name and name not in names:
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):
                    targets.add(name)
        graph[module] = targets
    return graph


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_of_tfllm_is_in_an_import_circle():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    circles = sorted(m for m in graph if m in reachable(graph, m))
    assert circles == []


def test_the_shared_machinery_imports_no_task():
    graph = import_graph()
    below = [m for m in graph if not m.startswith("tfllm.tasks")
             and not any(m == e or m.startswith(e + ".") for e in ENTRY_POINTS)]
    offenders = {m: sorted(t for t in reachable(graph, m) if t.startswith("tfllm.tasks"))
                 for m in below}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_layers_and_models_import_keras_only():
    for folder in ("layers", "models"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n and n.split(".")[0] == "tensorflow" for n in names), path


def test_a_circle_is_caught(tmp_path, monkeypatch):
    """The check itself: two modules importing each other (one inside a function)."""
    package = tmp_path / "tfllm"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from tfllm.b import g\n")
    (package / "b.py").write_text("def g():\n    from tfllm import a\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", package)
    graph = import_graph()
    assert sorted(m for m in graph if m in reachable(graph, m)) == ["tfllm.a", "tfllm.b"]


def test_every_import_of_tfllm_names_a_module_that_exists():
    """A module moved or renamed leaves no import behind, in the package, the tests, the
    benches or the entry points (imports inside functions included, which only fail when
    they run)."""
    names = module_names()
    users = {**{str(p.relative_to(ROOT)): p for folder in ("tests", "bench")
                for p in (ROOT / folder).rglob("*.py")},
             "train.py": ROOT / "train.py", "evaluate.py": ROOT / "evaluate.py", **names}
    missing = []
    for module, path in users.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                target = node.module
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if target.split(".")[0] == "tfllm" and target not in names:
                missing.append(f"{module} imports {target}")
    assert missing == []


def test_graph_functions_are_made_in_one_place():
    """Every TensorFlow graph function of tfllm comes from `tfllm.graph_function` (AutoGraph
    off): a bare `tf.function` would convert the source of everything it calls again."""
    found = []
    for module, path in module_names().items():
        if module == "tfllm.graph_function":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "function"
                    and isinstance(node.value, ast.Name) and node.value.id == "tf"):
                found.append(f"{module}:{node.lineno}")
    assert found == []


def test_nothing_a_user_reads_points_at_the_teams_shared_folder():
    """A user's clone has no ../shared: the package, the commands, README and docs/ name
    datasets (`python -m tfllm.datasets`) and never that folder."""
    files = [*PACKAGE.rglob("*.py"), ROOT / "train.py", ROOT / "evaluate.py",
             ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    found = [f"{path.relative_to(ROOT)}:{number}"
             for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "../shared" in line or "shared/data" in line or "shared/ref" in line]
    assert found == []

"""The import direction of the project (docs/ARCHITECTURE.md), computed from the code's own imports."""

from __future__ import annotations

from pathlib import Path

from layers import cycle_problems, folder_references, import_graph, imports_of, layer_of, layer_violations

ROOT = Path(__file__).resolve().parent.parent

def test_every_import_points_down_the_layers_and_none_closes_a_cycle():
    graph = import_graph(ROOT)
    problems = layer_violations(graph) + cycle_problems(graph) + folder_references(ROOT)
    assert not problems, "\n".join(problems)

def test_base_modules_import_only_base_modules():
    graph = import_graph(ROOT)
    base = [m for m in graph if layer_of(m) == "base"]
    assert "subnets.weights" in base and "subnets.errors" in base
    assert all(layer_of(t) == "base" for m in base for t in graph[m]), {m: graph[m] for m in base}

def test_the_checker_sees_relative_function_level_and_upward_imports(tmp_path):
    """A store module importing the library inside a function, and two store modules importing each other, are
    reported with the names of the modules involved."""
    (tmp_path / "subnets").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "subnets" / "__init__.py").write_text("")
    (tmp_path / "subnets" / "models.py").write_text("from .errors import SubnetsError\n")
    (tmp_path / "subnets" / "errors.py").write_text("")
    (tmp_path / "subnets" / "config.py").write_text("RECIPES = 'pipelines'\n")
    (tmp_path / "masks" / "__init__.py").write_text("")
    (tmp_path / "masks" / "a.py").write_text("def f():\n    from subnets.models import x\n\nfrom . import b\n")
    (tmp_path / "masks" / "b.py").write_text("from .a import f\n")
    (tmp_path / "pipelines" / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["masks.a"] == {"subnets.models", "masks.b"} and graph["subnets.models"] == {"subnets.errors"}
    assert layer_violations(graph) == [
        "masks.a (store) imports subnets.models (library): a store module may only import the layers base, store."]
    assert cycle_problems(graph) == ["import cycle among masks.a, masks.b (masks.a -> masks.b; masks.b -> masks.a); "
                                     "move what they share below them."]
    assert folder_references(tmp_path) == ["subnets.config (library) names the 'pipelines' folder (line 1); let the "
                                           "pipeline pass what it needs from there instead."]

def test_imports_of_resolves_package_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    init = tmp_path / "pkg" / "__init__.py"
    init.write_text("from .mod import thing\nfrom . import other\n")
    assert imports_of("pkg", init, {"pkg", "pkg.mod", "pkg.other"}) == {"pkg.mod", "pkg.other"}

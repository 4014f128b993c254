"""The project's import graph and the layers it must respect, read from the code's own imports with `ast`.

Run `python -m tests.layers` from the repository root to print the graph (one line per module: the project
modules it imports) and every import that breaks the layer rules; `--root DIR` reads another checkout.
Exit status 1 when a rule is broken. `tests/test_layers.py` runs the same check.

Layers, lowest first; a module may import modules of its own layer and of the layers below it, never above:

    base      subnets.errors, io, targets, families, weights, sparsity, state_io, threads, tasks, tensorboard,
              attention, extras:
              what the store and the library share (no model loading, no training, nothing of the mask store)
    store     masks (the mask store, its record formats, sparse checkpoints, reports) but masks.cli, masks.__main__
    library   the rest of subnets (models, data, config, training, masking, objectives, selective, attacks, ...)
    apps      masks.cli, masks.__main__ and pipelines (command lines over the library)

Within a layer the graph must have no cycles (function-level imports included), and no module below `apps` may
name the folder of a higher layer in a string (as a path into `pipelines/` would). Base modules are top-level
modules of `subnets`, whose package `__init__` loads nothing eagerly, so importing them runs nothing above them.

Modules are named by their folder (`masks.store`, `pipelines.evaluate`); installed, those folders are the packages
`subnets.masks` and `subnets.pipelines` (pyproject's package-dir), and imports of those names count as the folders'.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Iterable

PACKAGES = ("subnets", "masks", "pipelines")
LAYERS = ("base", "store", "library", "apps")
INSTALLED_AS = {"subnets.masks": "masks", "subnets.pipelines": "pipelines"}  # installed name -> folder
BASE_MODULES = (
    "subnets.errors", "subnets.io", "subnets.targets", "subnets.weights", "subnets.state_io", "subnets.threads",
    "subnets.tasks", "subnets.tensorboard", "subnets.attention", "subnets.sparsity", "subnets.families",
    "subnets.extras",
)
APP_MODULES = ("masks.cli", "masks.__main__")


def layer_of(module: str) -> str:
    """The layer a project module belongs to (see the module docstring)."""
    if module in BASE_MODULES:
        return "base"
    if module in APP_MODULES or module.split(".")[0] == "pipelines":
        return "apps"
    if module.split(".")[0] == "masks":
        return "store"
    return "library"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages under `root`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def folder_name(name: str) -> str:
    """A dotted import name with the installed package names of masks/ and pipelines/ replaced by the folders'."""
    for installed, folder in INSTALLED_AS.items():
        if name == installed or name.startswith(installed + "."):
            return folder + name[len(installed):]
    return name


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name a (possibly relative) `from ... import` refers to."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The project modules `module` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks)."""
    known = set(known)
    found: set[str] = set()

    def add(name: str) -> None:
        name = folder_name(name)
        while name and name not in known:  # `import a.b.c` of a non-module attribute: its closest module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = folder_name(_absolute(module, path.name == "__init__.py", node))
            for alias in node.names:  # `from pkg import submodule` depends on the submodule itself
                add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return found


def folder_references(root: Path) -> list[str]:
    """One sentence per string constant in a module below `apps` that names the `pipelines` folder."""
    problems = []
    for module, path in module_files(root).items():
        if layer_of(module) == "apps":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Constant) and node.value == "pipelines":
                problems.append(f"{module} ({layer_of(module)}) names the 'pipelines' folder (line {node.lineno}); "
                                f"let the pipeline pass what it needs from there instead.")
    return problems


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = module_files(root)
    return {module: imports_of(module, path, files) for module, path in files.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """One sentence per import that points to a higher layer."""
    problems = []
    for module in sorted(graph):
        for target in sorted(graph[module]):
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module)):
                problems.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)}): a "
                                f"{layer_of(module)} module may only import the layers "
                                f"{', '.join(LAYERS[: LAYERS.index(layer_of(module)) + 1])}.")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted, as a list of groups."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def cycle_problems(graph: dict[str, set[str]]) -> list[str]:
    """One sentence per import cycle, naming the imports that close it."""
    problems = []
    for group in cycles(graph):
        members = set(group)
        edges = [f"{m} -> {t}" for m in group for t in sorted(graph[m] & members)]
        problems.append(f"import cycle among {', '.join(group)} ({'; '.join(edges)}); move what they share below them.")
    return problems


def render(graph: dict[str, set[str]], problems: list[str]) -> str:
    """The graph by layer, one line per module with the project modules it imports."""
    lines = []
    for layer in LAYERS:
        lines.append(f"[{layer}]")
        for module in sorted(m for m in graph if layer_of(m) == layer):
            targets = ", ".join(sorted(graph[module])) or "-"
            lines.append(f"  {module} -> {targets}")
    counts: dict[tuple[str, str], int] = {}
    for module, targets in graph.items():
        for target in targets:
            key = (layer_of(module), layer_of(target))
            counts[key] = counts.get(key, 0) + 1
    lines.append("[imports between layers]")
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(counts.items(), key=lambda kv: (LAYERS.index(kv[0][0]),
                                                                                          LAYERS.index(kv[0][1])))]
    lines.append(f"[problems: {len(problems)}]")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.layers", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root to read (default: this checkout)")
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    problems = layer_violations(graph) + cycle_problems(graph) + folder_references(args.root)
    print(render(graph, problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Installed size of the core install and of each extra, read from the environment that runs it (issue 26).

    python benchmarks/install_size.py      # from the repository root, in a venv with `pip install -e ".[test]"`

For a requirement set, its closure over the installed distributions' `Requires-Dist` (markers evaluated, extras
followed) and the bytes of the files each distribution's RECORD lists. An extra's size is what it adds to the core.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

INSTALLED = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d for d in metadata.distributions()}


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions a set of requirement strings pulls in (itself included)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        key = (name, frozenset(requirement.extras))
        if key in seen or name == "subnets":
            continue
        seen.add(key)
        if name not in INSTALLED:
            raise SystemExit(f"{name} is not installed here; install the toolkit with every extra first.")
        for text in INSTALLED[name].requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                todo.append(needed)
    return {name for name, _ in seen}


def mib(names: set[str]) -> str:
    total = sum(f.locate().stat().st_size for n in names for f in INSTALLED[n].files or [] if f.locate().is_file())
    return f"{len(names)} distributions, {total / 2**20:.0f} MiB"


def main() -> None:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    core = closure(project["dependencies"])
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "test"}
    print(f"core: {mib(core)} (torch alone: {mib({'torch'})})")
    for name, requirements in extras.items():
        print(f"[{name}] adds: {mib(closure(requirements) - core)}")
    everything = closure(project["dependencies"] + [r for v in extras.values() for r in v])
    print(f"core and every extra: {mib(everything)}")


if __name__ == "__main__":
    main()

"""Method registries: each method family (mask searches, adversaries, debiasing losses, selective optimizers) maps a
method name to the option groups it reads and its builder.

An option group is an argument dataclass whose fields are command-line options; every stage parses the groups of
every registered method, and a builder reads the ones of the chosen method from `OptionGroups`. The choice option
(`--method`, `--adversary`, ...) is typed `Literal[<registry keys>]`, so that `HfArgumentParser` rejects a typo
while parsing, and the group holding it checks it in `__post_init__` with `check_choice` (one validation style:
argument dataclasses raise `SubnetsError` from `__post_init__`) for instances built in Python.

Every family has the same layout and builder shape: one file per method (`masking/methods/`, `selective/methods/`,
`objectives/adversaries/`, `objectives/debiasing/`) holds its math, option group and builder, that folder's
`__init__.py` holds the registry alone, and a builder is `build(context)` with the family's context dataclass
carrying the parsed groups as `context.options` plus the family's inputs (`SearchContext`, `AdversaryContext`,
`DebiasContext`, `SelectiveContext`); a fixed variant of one builder is a `functools.partial`. Adding a method is
one new file plus one registry line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Collection, Generic, Iterable, Literal, Mapping, TypeVar

from .errors import SubnetsError

BuilderT = TypeVar("BuilderT")


@dataclass(frozen=True)
class Method(Generic[BuilderT]):
    """A registry entry: the option groups the method reads (argument dataclasses) and its builder."""

    build: BuilderT
    options: tuple[type, ...] = ()


def choices(registry: Mapping[str, Any]) -> Any:
    """The `Literal` type of a choice option over the registry's names (built when the module is imported)."""
    return Literal[tuple(registry)]


def check_choice(option: str, value: str, registry: Collection[str]) -> None:
    """Raise the one-sentence error for a value that is not a registered name (or one of a fixed set)."""
    if value not in registry:
        raise SubnetsError(f"Unknown --{option} '{value}'; expected one of {', '.join(registry)}.")


def option_groups(*registries: Mapping[str, Method]) -> list[type]:
    """Every option group the registries' methods read, each once, in registry order (the stages parse these)."""
    groups: list[type] = []
    for registry in registries:
        for method in registry.values():
            groups.extend(group for group in method.options if group not in groups)
    return groups


class OptionGroups:
    """Parsed option groups by class; a group that was not given takes its defaults."""

    def __init__(self, groups: Iterable[Any] = ()):
        self.groups = {type(group): group for group in groups if dataclasses.is_dataclass(group)}

    def __getitem__(self, cls: type) -> Any:
        if cls not in self.groups:
            self.groups[cls] = cls()
        return self.groups[cls]

    def used_by(self, method: Method) -> dict[str, Any]:
        """The option values a method reads, as one flat dict (for records and run metadata)."""
        return {k: v for cls in method.options for k, v in dataclasses.asdict(self[cls]).items()}

"""The selective methods of `--selective`: name -> option groups + builder (`build(SelectiveContext) ->
TrainingParts`). Adding one: a new file in this folder (its math, option group and builder) plus one line below
(docs/selective.md)."""

from __future__ import annotations

from functools import partial
from typing import Callable

from ...registry import Method
from ...training import TrainingParts
from ..setup import SelectiveContext
from .roast import RoastArguments, build_roast
from .rose import RoseArguments, build_rose

SelectiveBuilder = Callable[[SelectiveContext], TrainingParts]

SELECTIVE_METHODS: dict[str, Method[SelectiveBuilder]] = {
    "none": Method(lambda context: TrainingParts()),
    "rose_first": Method(partial(build_rose, variant="first"), (RoseArguments,)),
    "rose_second": Method(partial(build_rose, variant="second"), (RoseArguments,)),
    "rose_ensemble": Method(partial(build_rose, variant="ensemble"), (RoseArguments,)),
    "roast": Method(build_roast, (RoastArguments,)),
}

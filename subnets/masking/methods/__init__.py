"""The mask-search methods of stage 2 (`--method`): name -> option groups + builder.

A builder takes a `SearchContext` and returns a `FoundMask`. Adding a method: one new file in this folder (its
option group, with `config_group = "SearchArguments"`, and its builder) plus one line below (docs/mask_search.md).
"""

from __future__ import annotations

from typing import Callable

from ...registry import Method, choices
from .baselines import RandomArguments, search_magnitude, search_random
from .context import FoundMask, SearchContext
from .hard_concrete import HardConcreteArguments, search_hard_concrete
from .imp import IMPArguments, search_imp
from .oneshot import OneShotArguments
from .scores import ScoreArguments, search_scores
from .sparsegpt import search_sparsegpt
from .wanda import search_wanda

MaskSearch = Callable[[SearchContext], FoundMask]

MASK_METHODS: dict[str, Method[MaskSearch]] = {
    "hard_concrete": Method(search_hard_concrete, (HardConcreteArguments,)),
    "scores": Method(search_scores, (ScoreArguments,)),
    "imp": Method(search_imp, (IMPArguments,)),
    "random": Method(search_random, (RandomArguments,)),
    "magnitude": Method(search_magnitude, (OneShotArguments,)),
    "wanda": Method(search_wanda, (OneShotArguments,)),
    "sparsegpt": Method(search_sparsegpt, (OneShotArguments,)),
}
MaskMethodName = choices(MASK_METHODS)

__all__ = ["MASK_METHODS", "FoundMask", "MaskMethodName", "MaskSearch", "OneShotArguments", "SearchContext"]

"""The mask-search methods of stage 2 (`--method`): name -> builder + option groups. One file per method holds
its math, its controller, its option group and its builder `search_<name>(context: SearchContext) -> FoundMask`
(docs/mask_search.md, "How to add a mask method"); the shared machinery is in `subnets.masking`.
"""

from __future__ import annotations

from typing import Callable

from ...registry import Method, choices
from ..oneshot import OneShotArguments
from ..search_context import FoundMask, SearchContext
from .hard_concrete import HardConcreteArguments, search_hard_concrete
from .imp import IMPArguments, search_imp
from .magnitude import search_magnitude
from .random import RandomArguments, search_random
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

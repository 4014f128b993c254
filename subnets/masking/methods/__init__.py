"""The mask-search methods of stage 2 (`--method`): name -> builder + option groups. One file per method holds
its math, its controller, its option group and its builder `build_<name>(context: SearchContext) -> FoundMask`
(docs/mask_search.md, "How to add a mask method"); the shared machinery is in `subnets.masking`.
"""

from __future__ import annotations

from typing import Callable

from ...registry import Method, choices
from ..oneshot import OneShotArguments
from ..search_context import FoundMask, SearchContext
from .hard_concrete import HardConcreteArguments, build_hard_concrete
from .imp import IMPArguments, build_imp
from .magnitude import build_magnitude
from .random import RandomArguments, build_random
from .scores import ScoreArguments, build_scores
from .sparsegpt import build_sparsegpt
from .wanda import build_wanda

MaskSearch = Callable[[SearchContext], FoundMask]

MASK_METHODS: dict[str, Method[MaskSearch]] = {
    "hard_concrete": Method(build_hard_concrete, (HardConcreteArguments,)),
    "scores": Method(build_scores, (ScoreArguments,)),
    "imp": Method(build_imp, (IMPArguments,)),
    "random": Method(build_random, (RandomArguments,)),
    "magnitude": Method(build_magnitude, (OneShotArguments,)),
    "wanda": Method(build_wanda, (OneShotArguments,)),
    "sparsegpt": Method(build_sparsegpt, (OneShotArguments,)),
}
MaskMethodName = choices(MASK_METHODS)

__all__ = ["MASK_METHODS", "FoundMask", "MaskMethodName", "MaskSearch", "OneShotArguments", "SearchContext"]

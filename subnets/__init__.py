"""subnets: sparse and robust subnetworks of pre-trained language models.

The notebook API (docs/api.md) is importable from here: `from subnets import load_task, load_model, search_mask,
draw_ticket, retrain, attack, put_mask`. It is loaded on first use, so `import subnets` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("TaskData", "load_task", "load_model", "load_data", "finetune", "search_mask", "draw_ticket", "retrain",
        "attack", "put_mask")
# bring your own loop (docs/api.md): name -> the module that defines it, imported on first use
_LOOP = {"attach": "loop", "fix_mask": "loop", "finalize": "loop", "make_objective": "loop",
         "SubnetsTrainer": "hf_trainer"}
__all__ = ["__version__", *_API, *_LOOP]


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in _LOOP:
        import importlib

        return getattr(importlib.import_module(f".{_LOOP[name]}", __name__), name)
    raise AttributeError(f"module 'subnets' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The API for tab completion (it is loaded lazily, so the module's own namespace does not list it)."""
    return sorted(__all__)

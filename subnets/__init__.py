"""subnets: sparse and robust subnetworks of pre-trained language models.

The notebook API (docs/api.md) is importable from here: `from subnets import load_task, load_model, search_mask,
draw_ticket, retrain, attack, put_mask`. It is loaded on first use, so `import subnets` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("TaskData", "load_task", "load_model", "load_data", "finetune", "search_mask", "draw_ticket", "retrain",
        "attack", "put_mask")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'subnets' has no attribute '{name}'")

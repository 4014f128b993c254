"""CPU threads of a stage: how many intra-op threads it runs, and how its idle OpenMP threads wait.

torch's CPU kernels run on an OpenMP pool (GNU libgomp in the pip wheels). Two things make a stage collapse on a
shared CPU: more threads than the cores it may use, and libgomp's default wait, which spins for 300,000
iterations at every barrier before sleeping, so that threads spin-wait for a descheduled sibling instead of
giving its core back. `OMP_WAIT_POLICY=PASSIVE` makes idle threads sleep at once (GOMP_SPINCOUNT 0). libgomp
reads it once, when torch loads it, so `prefer_passive_wait` must run before `import torch`: `pipelines/__init__.py`
calls it, which covers every stage script. This module therefore imports torch only inside its functions.
"""

from __future__ import annotations

import os

from .errors import SubnetsError

# Set by the user: then these are left alone (OMP_WAIT_POLICY=ACTIVE restores spinning).
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def prefer_passive_wait() -> None:
    """Make idle OpenMP threads sleep instead of spin, unless the environment already says how they wait."""
    if not any(name in os.environ for name in WAIT_POLICY_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which taskset/cgroups/a runner may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to `num_threads` if given, else to the usable cores unless $OMP_NUM_THREADS
    is set (torch already follows it). A runner that splits the cores between worker processes passes each its
    share (`--num_threads`). Returns the number of threads now in use.
    """
    import torch

    if num_threads is not None and num_threads < 1:
        raise SubnetsError(f"--num_threads must be a positive integer; got {num_threads}.")
    if num_threads is None and not os.environ.get("OMP_NUM_THREADS"):
        num_threads = usable_cores()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()

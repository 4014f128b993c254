"""The training loop's hot path reads no tensor values on the host, checked on CPU for every stage family.

On CUDA each of these calls is a host synchronisation (tests/test_cuda.py checks the real thing there); here a
torch function mode records them during the steady-state steps of one short run of each family.
"""

import pytest
from torch.overrides import TorchFunctionMode

from stage_families import FAMILIES, MAX_STEPS, WARMUP_STEPS, SteadyStateGuard, make_workspace, run_family

# Tensor calls that copy a device value to the host (or depend on one) on CUDA.
HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero",
              "masked_select", "unique", "quantile", "argwhere", "allclose", "equal"}


class HostReadRecorder(TorchFunctionMode):
    def __init__(self, found: list[str]):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("families"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_steady_state_steps_read_nothing_on_the_host(family, places, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    found: list[str] = []
    guard = SteadyStateGuard(lambda: HostReadRecorder(found))
    run_family(family, places, tmp_path / family, guard, monkeypatch)
    rounds = 2 if family.startswith("imp") else 1
    assert guard.guarded_steps == rounds * (MAX_STEPS - WARMUP_STEPS)
    assert found == []

"""`subnets-masks plot` of a hard-concrete gate state (issue 26): keep probabilities on a 0-1 scale with a histogram,
not log-alpha; the formula is docs/methods.md's P(z != 0) = sigmoid(log_alpha - beta log(-l / r))."""

from __future__ import annotations

import math

import pytest
import torch

from subnets.masks import MaskStore
from subnets.masks import plot as mask_plot
from subnets.masks.cli import main
from subnets.targets import find_targets


@pytest.fixture
def drawn(monkeypatch):
    """What `plot_grid` was given and the figure `_save` wrote (the real functions still run)."""
    seen: dict = {}
    plot_grid, save = mask_plot.plot_grid, mask_plot._save

    def record_grid(grid, title, label, path, **kwargs):
        seen.update(grid=grid, label=label, **kwargs)
        plot_grid(grid, title, label, path, **kwargs)

    def record_figure(fig, path):
        seen["figure"] = fig
        save(fig, path)

    monkeypatch.setattr(mask_plot, "plot_grid", record_grid)
    monkeypatch.setattr(mask_plot, "_save", record_figure)
    return seen


def test_a_gate_state_is_drawn_as_keep_probabilities_with_a_histogram(tmp_path, tiny_bert, drawn):
    model, _ = tiny_bert
    targets = find_targets(model)
    g = torch.Generator().manual_seed(0)
    log_alpha = {t.name: torch.randn(t.shape, generator=g) * 3 for t in targets}  # many values outside [0, 1]
    record = MaskStore(tmp_path / "store").put(log_alpha, {"method": "hard_concrete", "task": "sst2"})
    assert main(["--root", str(tmp_path / "store"), "plot", record, "--out", str(tmp_path / "gates.png")]) == 0
    assert (tmp_path / "gates.png").stat().st_size > 0

    shift = 2.0 / 3.0 * math.log(0.1 / 1.1)  # beta log(-l / r), l = -0.1, r = 1.1, beta = 2/3
    expected = torch.sigmoid(torch.cat([v.flatten() for v in log_alpha.values()]) - shift)
    values = drawn["values"]
    assert 0.0 <= float(values.min()) and float(values.max()) <= 1.0
    torch.testing.assert_close(values, expected)
    query = targets[0]
    cell = drawn["grid"]["layers"][query.layer][query.kind]
    assert drawn["label"] == "mean keep probability" and 0.0 < cell < 1.0
    layer0 = [t for t in targets if t.layer == query.layer and t.kind == query.kind]
    weights = [torch.sigmoid(log_alpha[t.name] - shift) for t in layer0]
    assert cell == pytest.approx(float(sum(w.sum() for w in weights) / sum(w.numel() for w in weights)), rel=1e-5)

    heat = drawn["figure"].axes[0]
    (hist,) = [ax for ax in drawn["figure"].axes if ax.get_xlabel() == "keep probability"]
    assert heat.images[0].get_clim() == (0.0, 1.0) and hist.get_ylabel() == "entries"
    assert sum(bar.get_height() for bar in hist.patches) == expected.numel()


def test_dir_subnets_lists_the_api():
    import subnets

    assert {"load_model", "search_mask", "draw_ticket", "retrain", "attack", "attach", "finalize"} <= set(dir(subnets))

"""PNG heat maps (matplotlib, Agg backend): layer x matrix kind values, and update frequency per layer over steps."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from subnets.errors import SubnetsError
from subnets.extras import require
from subnets.io import atomic_write_bytes

from .report import grid_columns


def _pyplot():
    require("matplotlib", extra="plots", purpose="Plotting").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_format(path: str | os.PathLike) -> str:
    """The image format a path's extension names (png without one); an extension matplotlib cannot write is an
    error."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    known = FigureCanvasBase.get_supported_filetypes()
    if suffix not in known:
        raise SubnetsError(f"Cannot write a .{suffix} image; expected one of {', '.join(sorted(known))}.")
    return suffix


def _save(fig: Any, path: str | os.PathLike) -> None:
    """Write the figure atomically (temp file + rename), in the format of the path's extension."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format(path), dpi=120)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_grid(grid: Mapping[str, Any], title: str, label: str, path: str | os.PathLike, *,
              scale: tuple[float, float] = (0.0, 1.0), values: Any = None) -> None:
    """Heat map with one row per encoder layer and one column per matrix kind, coloured over `scale`; with
    `values` (a 1-D array, e.g. a gate or score state), a histogram of them beside it."""
    plt = _pyplot()
    columns = grid_columns(grid)
    layers = list(grid["layers"])
    data = [[grid["layers"][i].get(k, float("nan")) for k in columns] for i in layers]
    width, height = 1.2 * len(columns) + 2, 0.4 * len(layers) + 2
    if values is None:
        fig, ax = plt.subplots(figsize=(width, height))
    else:
        fig, (ax, hist) = plt.subplots(1, 2, figsize=(width + 5, max(height, 4)),
                                       gridspec_kw={"width_ratios": [width, 5]})
        hist.hist(values, bins=50, color="tab:blue")
        hist.set_xlabel(label.replace("mean ", ""))
        hist.set_ylabel("entries")
        hist.set_title("histogram of all entries")
    low, high = scale
    image = ax.imshow(data, vmin=low, vmax=high, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(layers)), [f"layer {i}" for i in layers])
    middle = low + 0.6 * (high - low)
    for row, cells in enumerate(data):
        for col, value in enumerate(cells):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value < middle else "black")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def plot_steps(steps: Sequence[int], per_layer: Mapping[int, Sequence[float]], title: str, path: str | os.PathLike) -> None:
    """Heat map with one row per encoder layer and one column per logged step: fraction of entries updated."""
    plt = _pyplot()
    layers = sorted(per_layer)
    fig, ax = plt.subplots(figsize=(min(max(5, 2 + 0.15 * len(steps)), 16), 0.4 * len(layers) + 2))
    image = ax.imshow([per_layer[i] for i in layers], vmin=0.0, vmax=1.0, cmap="magma", aspect="auto",
                      interpolation="nearest")
    ticks = list(range(0, len(steps), max(1, len(steps) // 10)))
    ax.set_xticks(ticks, [str(steps[t]) for t in ticks])
    ax.set_yticks(range(len(layers)), [f"layer {i}" for i in layers])
    ax.set_xlabel("step")
    fig.colorbar(image, ax=ax, label="fraction updated")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)

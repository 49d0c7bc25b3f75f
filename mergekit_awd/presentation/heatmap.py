"""Annotated heatmap PNGs of |cos| matrices (model cards, ``mergekit-awd inspect``).

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global state
or needs a display.  matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class HeatmapPanel:
    """One panel: a matrix with labelled rows and columns."""

    title: str
    values: torch.Tensor
    row_labels: Sequence[str]
    column_labels: Sequence[str]


def _text_colour(value: float, vmax: float) -> str:
    return "black" if value > 0.6 * vmax else "white"


def save_heatmaps(path: str, panels: Sequence[HeatmapPanel], title: str, vmax: float = 1.0) -> str:
    """Draw ``panels`` side by side on one colour scale [0, vmax] and write a PNG to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    widest = max(len(p.column_labels) for p in panels)
    tallest = max(len(p.row_labels) for p in panels)
    label_room = max(len(str(label)) for p in panels for label in p.row_labels) * 0.08
    width = len(panels) * (1.0 + 0.6 * widest + label_room) + 1.2
    height = 1.4 + 0.6 * tallest
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    image = None
    annotate = max(widest, tallest) <= 12
    for ax, panel in zip(axes, panels):
        values = panel.values.detach().to(torch.float64).cpu()
        image = ax.imshow(values.numpy(), vmin=0.0, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xticks(range(len(panel.column_labels)))
        ax.set_xticklabels(panel.column_labels, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(panel.row_labels)))
        ax.set_yticklabels(panel.row_labels, fontsize=8)
        if annotate:
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    value = float(values[i, j])
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color=_text_colour(value, vmax))
    figure.colorbar(image, ax=list(axes), shrink=0.85, label="|cos|")
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, format="png")
    return path

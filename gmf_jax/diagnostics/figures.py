"""Figures for diagnostics, drawn on an Agg canvas (never a display, no pyplot state)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def image_grid(rows: list[np.ndarray], row_labels: list[str], title: str) -> Figure:
  """Rows of images side by side; each row is (N, H, W, C) with values in [0, 1]."""
  num_cols = max(len(r) for r in rows)
  fig = new_figure(0.9 * num_cols + 0.8, 0.95 * len(rows) + 0.4)
  axes = fig.subplots(len(rows), num_cols, squeeze=False)
  for r, (images, label) in enumerate(zip(rows, row_labels, strict=True)):
    for c in range(num_cols):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(False)
      if c < len(images):
        image = np.clip(images[c], 0.0, 1.0)
        if image.shape[-1] == 1:
          ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
          ax.imshow(image)
    axes[r][0].set_ylabel(label, fontsize="small")
  fig.suptitle(title, fontsize="medium")
  return fig


def save_png(fig: Figure, path: str) -> str:
  tmp = f"{path}.tmp"
  fig.savefig(tmp, format="png")
  os.replace(tmp, path)
  return path

"""Figures for diagnostics, drawn on an Agg canvas (never a display, no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def new_figure(width: float, height: float,
               margins: tuple[float, float, float, float] | None = None) -> Figure:
  """A figure of `width` x `height` inches on an Agg canvas.

  With `margins` (left, right, bottom, top, in inches) the axes go inside fixed margins;
  without, matplotlib's constrained layout places them, which measures every label and takes
  roughly twice as long to draw.
  """
  fig = Figure(figsize=(width, height), dpi=DPI, layout=None if margins else "constrained")
  FigureCanvasAgg(fig)
  if margins:
    left, right, bottom, top = margins
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height)
  return fig


def image_grid(rows: list[np.ndarray], row_labels: list[str], title: str) -> Figure:
  """Rows of images as one mosaic; each row is (N, H, W, C) with values in [0, 1].

  One `imshow` of a tiled array, not one axes per image: drawing stays fast for large grids.
  """
  num_cols = max(len(r) for r in rows)
  height, width, channels = rows[0].shape[1:]
  pad = max(1, height // 8)
  mosaic = np.ones((len(rows) * (height + pad) - pad, num_cols * (width + pad) - pad, channels))
  for r, images in enumerate(rows):
    for c, image in enumerate(images):
      y, x = r * (height + pad), c * (width + pad)
      mosaic[y:y + height, x:x + width] = np.clip(image, 0.0, 1.0)
  scale = 0.9 / max(height, width) * max(8, min(height, width))  # inches per image, about
  fig = new_figure(scale * num_cols + 0.9, scale * len(rows) + 0.5)
  ax = fig.add_subplot()
  if channels == 1:
    ax.imshow(mosaic[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  else:
    ax.imshow(mosaic, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([(height + pad) * r + height / 2 for r in range(len(rows))])
  ax.set_yticklabels(row_labels, fontsize="small")
  ax.tick_params(length=0)
  for spine in ax.spines.values():
    spine.set_visible(False)
  ax.set_title(title, fontsize="medium")
  return fig

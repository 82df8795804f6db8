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


def image_grid(rows: list[np.ndarray], row_labels: list[str], title: str,
               image_px: int = 64) -> Figure:
  """Rows of images as one mosaic; each row is (N, H, W, C) with values in [0, 1].

  The mosaic is scaled up by a whole factor (each image about `image_px` pixels) and placed
  on the canvas pixel for pixel: no axes and no resampling, so pixels stay square and sharp,
  and drawing takes a third of an axes `imshow`'s time.
  """
  num_cols = max(len(r) for r in rows)
  height, width, channels = rows[0].shape[1:]
  pad = max(1, height // 8)
  mosaic = np.ones((len(rows) * (height + pad) - pad, num_cols * (width + pad) - pad, channels))
  for r, images in enumerate(rows):
    for c, image in enumerate(images):
      y, x = r * (height + pad), c * (width + pad)
      mosaic[y:y + height, x:x + width] = np.clip(image, 0.0, 1.0)
  zoom = max(1, round(image_px / max(height, width)))
  mosaic = np.repeat(np.repeat(mosaic, zoom, axis=0), zoom, axis=1)
  border, title_px = 10, 30
  label_px = border + 7 * max((len(label) for label in row_labels), default=0)
  fig_w, fig_h = mosaic.shape[1] + label_px + border, mosaic.shape[0] + title_px + border
  fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
  FigureCanvasAgg(fig)
  if channels == 1:
    fig.figimage(mosaic[..., 0], xo=label_px, yo=border, cmap="gray", vmin=0.0, vmax=1.0,
                 origin="upper")
  else:
    fig.figimage(mosaic, xo=label_px, yo=border, origin="upper")
  for r, label in enumerate(row_labels):
    if label:
      center = border + mosaic.shape[0] - (r * (height + pad) + height / 2) * zoom
      fig.text((label_px - 6) / fig_w, center / fig_h, label, ha="right", va="center",
               fontsize="small")
  fig.text(0.5, 1 - 6 / fig_h, title, ha="center", va="top", fontsize="medium")
  return fig

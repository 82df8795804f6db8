"""PNG plots of a run's `metrics.csv`: a grid of every metric, plus loss and learning rate alone.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, so plotting never
opens a display and never touches pyplot's global state (safe inside a training process).
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

# Splits drawn in this order and colour; any other prefix follows, in order of appearance.
SPLITS = ("train", "eval")
DIAGNOSTICS = "diag"  # the prefix of diagnostics' scalars: diag/<name>/<key>
GRID_COLUMNS = 3
# Fixed margins in inches instead of a layout engine: constrained/tight layout measure every
# tick label once more and roughly double the drawing time.
PANEL_SIZE = (4.6, 3.2)  # one grid cell, margins included
SINGLE_SIZE = (6.4, 4.2)
MARGINS = {"left": 0.8, "right": 0.2, "top": 0.4, "bottom": 0.55}
SUPTITLE_HEIGHT = 0.35
DPI = 110
MARKER_MAX_POINTS = 30  # sparse curves (eval, a single point) get markers to stay visible
TICKS = 5  # at most this many major tick intervals per linear axis
LOG_DECADES = 2.0  # log y-axis when positive values span more than this many decades


class Curve(NamedTuple):
  """One metric's finite points, sorted by step."""

  steps: np.ndarray
  values: np.ndarray


def read_metrics(metrics_csv: str) -> dict[str, Curve]:
  """Reads a long-format `metrics.csv` (step,name,value,wall_time) into one curve per name.

  Non-finite values and malformed rows are skipped. When a step repeats (a resumed run writes
  again from its last checkpoint) the later row wins.

  Returns:
    Name -> curve, in order of each name's first appearance; names with no finite point are left
    out.
  """
  raw: dict[str, tuple[list[float], list[float]]] = {}
  with open(metrics_csv, newline="") as f:
    for row in csv.DictReader(f):
      try:
        step, value = float(row["step"]), float(row["value"])
      except (KeyError, TypeError, ValueError):
        continue
      if math.isfinite(step) and math.isfinite(value) and row["name"]:
        steps, values = raw.setdefault(row["name"], ([], []))
        steps.append(step)
        values.append(value)
  return {name: _last_per_step(steps, values) for name, (steps, values) in raw.items()}


def _last_per_step(steps: list[float], values: list[float]) -> Curve:
  steps_a, values_a = np.asarray(steps), np.asarray(values)
  # np.unique keeps the first occurrence; reversing makes that the last row written.
  uniq, first = np.unique(steps_a[::-1], return_index=True)
  return Curve(uniq, values_a[::-1][first])


def split_name(name: str) -> tuple[str, str]:
  """`"train/loss"` -> `("train", "loss")`; a name without a prefix has split `""`."""
  if "/" not in name:
    return "", name
  split, base = name.split("/", 1)
  return split, base


def group_by_base(series: Mapping[str, Curve]) -> dict[str, dict[str, Curve]]:
  """Base metric -> {split -> curve}: `loss` first, the rest in order of appearance."""
  groups: dict[str, dict[str, Curve]] = {}
  for name, curve in series.items():
    split, base = split_name(name)
    groups.setdefault(base, {})[split] = curve
  order = sorted(groups, key=lambda base: base != "loss")  # stable: keeps appearance order
  return {base: _order_splits(groups[base]) for base in order}


def ordered_names(names) -> list[str]:
  """Metric names in the order of `metrics.png`'s panels: by base metric (`loss` first, the rest
  in order of appearance), each base's splits train, eval, then any other."""
  groups = group_by_base(dict.fromkeys(names))
  return [f"{split}/{base}" if split else base for base, splits in groups.items()
          for split in splits]


def _order_splits(curves: dict[str, Curve]) -> dict[str, Curve]:
  rank = {split: i for i, split in enumerate(SPLITS)}
  return dict(sorted(curves.items(), key=lambda item: rank.get(item[0], len(SPLITS))))


def make_metrics_figure(series: Mapping[str, Curve], title: str | None = None) -> Figure | None:
  """A grid with one panel per base metric (train and eval curves together).

  Returns:
    The figure, whose axes are exactly the panels, titled by base name; None with no data.
  """
  groups = group_by_base(series)
  if not groups:
    return None
  ncols = min(GRID_COLUMNS, len(groups))
  fig, axes = figure_with_panels(len(groups), ncols, PANEL_SIZE, title)
  for ax, (base, curves) in zip(axes, groups.items(), strict=True):
    _draw_panel(ax, base, curves)
  return fig


def make_metric_figure(series: Mapping[str, Curve], base: str,
                       title: str | None = None) -> Figure | None:
  """One panel for `base` (e.g. `loss`) with every split that has it; None if none does."""
  curves = group_by_base(series).get(base)
  if not curves:
    return None
  fig, (ax,) = figure_with_panels(1, 1, SINGLE_SIZE, None)
  _draw_panel(ax, base, curves)
  ax.set_ylabel(base)
  if title:
    ax.set_title(f"{title}: {base}")
  return fig


FIGURES = ("metrics.png", "loss.png", "learning_rate.png", "diagnostics.png")


def plot_metrics(metrics_csv: str, out_dir: str, title: str | None = None,
                 figures: tuple[str, ...] = FIGURES) -> list[str]:
  """Writes `metrics.png` (all training metrics), `loss.png`, `learning_rate.png` and
  `diagnostics.png` (summary scalars of diagnostics that ran more than once) into `out_dir`.

  Args:
    metrics_csv: a run's `metrics.csv`.
    out_dir: where the PNGs go; created if missing.
    title: shown on the figures; defaults to the run's folder name.
    figures: which of them (FIGURES).

  Returns:
    The paths written: none for a file without finite values; a figure is skipped when its
    metric is absent.
  """
  series = read_metrics(metrics_csv)
  if not series:
    return []
  if title is None:
    title = os.path.basename(os.path.dirname(os.path.abspath(metrics_csv)))
  os.makedirs(out_dir, exist_ok=True)
  training = {k: v for k, v in series.items() if split_name(k)[0] != DIAGNOSTICS}
  # A diagnostic's summary scalars (diag/<name>/<key>, not per-layer keys like
  # diag/weight_stats/dense_0/kernel/grad_norm) over training, where it ran more than once: a
  # single point is in its own outputs under diagnostics/, and every panel costs drawing time.
  # Every scalar stays in metrics.csv.
  diagnostic = {k: v for k, v in series.items()
                if split_name(k)[0] == DIAGNOSTICS and k.count("/") == 2 and len(v.steps) > 1}
  makers = {
      "metrics.png": lambda: make_metrics_figure(training, title),
      "loss.png": lambda: make_metric_figure(training, "loss", title),
      "learning_rate.png": lambda: make_metric_figure(training, "learning_rate", title),
      "diagnostics.png": lambda: make_metrics_figure(diagnostic, f"{title}: diagnostics"),
  }
  written = []
  for filename in figures:
    fig = makers[filename]()
    if fig is not None:
      written.append(save_png(fig, os.path.join(out_dir, filename)))
  return written


def warm_up(imports: Sequence[str] = ()) -> threading.Thread:
  """Draws a tiny figure in a background thread and returns the thread.

  The first figure of a process pays for loading fonts and building text caches (about a third
  of the end-of-run plots' time); done while the first chunk compiles, that cost is hidden.
  Join the thread before plotting.

  Args:
    imports: modules to import first in the same thread (pandas, for a population's figures).
  """

  def draw():
    try:
      for name in imports:
        importlib.import_module(name)
      fig, (ax,) = figure_with_panels(1, 1, (2.0, 1.5), "warm-up")
      _draw_panel(ax, "loss", {"train": Curve(np.arange(3.0), np.arange(1.0, 4.0))})
      fig.savefig(io.BytesIO(), format="png")
    except Exception:  # noqa: BLE001 - only a head start; the real plots report their errors
      pass

  thread = threading.Thread(target=draw, name="gmf_jax-plots-warm-up", daemon=True)
  thread.start()
  return thread


def figure_with_panels(count: int, ncols: int, cell: tuple[float, float],
                        title: str | None) -> tuple[Figure, list]:
  """A figure with `count` axes laid out row by row in cells of `cell` inches (Agg canvas)."""
  nrows = math.ceil(count / ncols)
  top = SUPTITLE_HEIGHT if title else 0.0
  width, height = cell[0] * ncols, cell[1] * nrows + top
  fig = Figure(figsize=(width, height), dpi=DPI)
  FigureCanvasAgg(fig)
  if title:
    fig.suptitle(title, y=1 - 0.1 / height, va="top")
  axes_w = (cell[0] - MARGINS["left"] - MARGINS["right"]) / width
  axes_h = (cell[1] - MARGINS["top"] - MARGINS["bottom"]) / height
  axes = []
  for i in range(count):
    row, col = divmod(i, ncols)
    x = (col * cell[0] + MARGINS["left"]) / width
    y = ((nrows - 1 - row) * cell[1] + MARGINS["bottom"]) / height
    axes.append(fig.add_axes((x, y, axes_w, axes_h)))
  return fig, axes


def _draw_panel(ax, base: str, curves: Mapping[str, Curve]) -> None:
  for split, curve in curves.items():
    color = f"C{SPLITS.index(split)}" if split in SPLITS else None
    marker = "o" if len(curve.steps) <= MARKER_MAX_POINTS else None
    ax.plot(curve.steps, curve.values, label=split or base, color=color, marker=marker,
            markersize=3.5, linewidth=1.2)
  ax.set_title(base)
  ax.set_xlabel("step")
  ax.grid(True, alpha=0.3)
  # Each tick is several artists and a text to lay out: most of the drawing time. A few
  # round-numbered ticks per axis read as well and draw about a third faster than the default.
  ax.xaxis.set_major_locator(MaxNLocator(TICKS))
  if spans_decades(np.concatenate([curve.values for curve in curves.values()])):
    log_axis(ax.yaxis, ax.set_yscale)
  else:
    ax.yaxis.set_major_locator(MaxNLocator(TICKS))
  ax.legend(fontsize="small")


def spans_decades(values: np.ndarray) -> bool:
  """Whether finite `values`, all positive, span more than `LOG_DECADES` decades (a log axis
  reads them better)."""
  values = values[np.isfinite(values)]
  if values.size == 0 or np.any(values <= 0):
    return False
  return bool(np.log10(values.max() / values.min()) > LOG_DECADES)


def log_axis(axis, set_scale) -> None:
  """Makes `axis` logarithmic through `set_scale` (`ax.set_yscale`...), with plain labels."""
  set_scale("log")
  axis.set_minor_locator(NullLocator())
  # Plain labels (0.01, 1e-05): the default's mathtext ($10^{-2}$) is parsed per label, a sixth
  # of a figure's drawing time.
  axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def save_png(fig: Figure, path: str) -> str:
  """Writes `fig` as a PNG at `path`, atomically."""
  # Written beside and renamed, so a viewer polling the folder never sees half a PNG.
  tmp = f"{path}.tmp"
  fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 3})  # 6 (default): slower
  os.replace(tmp, path)
  return path

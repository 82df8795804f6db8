"""Figures of tables from `gmf_jax.analysis`: curves over training, every run's curves with its
group's mean (a population's figures), a metric against a hyperparameter, a two-parameter
heatmap, and a diagnostic's scalars per group.

Each function takes the DataFrames of `stats.curve_stats` or `stats.summarize` (or frames of the
same columns built by hand) and returns a `matplotlib.figure.Figure` on an Agg canvas: no display,
no pyplot state. Save one with `gmf_jax.runlog.plots.save_png(fig, path)`.

Layout is fixed in inches (no constrained/tight layout, which measures every label again and
about doubles the drawing time); only a legend beside the axes is measured, once, to size the
figure around it.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import ListedColormap, LogNorm, Normalize, to_rgba_array
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gmf_jax.runlog.plots import (
  DIAGNOSTICS,
  DPI,
  GRID_COLUMNS,
  MARGINS,
  MARKER_MAX_POINTS,
  PANEL_SIZE,
  SINGLE_SIZE,
  TICKS,
  figure_with_panels,
  log_axis,
  ordered_names,
  spans_decades,
  split_name,
)

CONFIG = "config."  # runs' and summaries' config columns: config.<dotted.key>
CURVE_COLUMNS = ("group", "step", "n", "mean", "low", "high")
SUMMARY_COLUMNS = ("mean", "ci_low", "ci_high")
LEGEND_INSIDE_MAX = 4  # up to this many groups the legend sits in the axes; more go beside them
SMALL_LEGEND_MAX = 10  # beyond this many entries the legend's font shrinks to x-small
NOTE_HEIGHT = 0.2  # inches added under the axes for a note on how groups are shown
LEGEND_PAD = 0.15  # inches between the axes (or the grid) and a legend beside them
CATEGORICAL_MAX = 10  # up to this many groups get the distinct default colours C0..C9
LEGEND_MAX = 20  # more groups than this are told apart by a colourbar, not a legend
HEAT_CELL = (0.8, 0.5)  # inches per heatmap cell (two lines of text), at least
CHAR_WIDTH = 0.075  # inches per character of a tick label at the default font, an upper bound
# A population's figures: each run a thin, light line, each group's mean a bold one.
RUN_WIDTH = 0.7
RUN_ALPHA = (0.5, 0.25)  # with a few runs per group, and with more than FEW_RUNS
FEW_RUNS = 8
MEAN_WIDTH = 2.2
# Viridis without its palest yellow, which is hard to see on white.
SEQUENTIAL = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.9, 256)), name="viridis_90")
COLORBAR = (0.15, 0.45)  # a colourbar's width, and the room its label and padding take (inches)


def plot_curves(curves: pd.DataFrame, *, title: str | None = None,
                log_y: bool | None = None) -> Figure:
  """One metric over training per group: the mean as a line, the band (low..high) shaded.

  Args:
    curves: `stats.curve_stats`' frame: columns `group, step, n, mean, low, high`, one row per
      (group, step); `.attrs["metric"]`, `["keys"]` and `["confidence"]` are used when present.
    title: the axes' title; defaults to the metric with what the band shows.
    log_y: log y-axis; None chooses it when the positive means span more than `LOG_DECADES`
      decades (as the run plots do).

  Returns:
    The figure: one axes with one band polygon per group (all in one `PolyCollection`,
    `ax.collections[0]`) and one mean line per group (one `LineCollection`, `collections[1]`;
    curves of at most `MARKER_MAX_POINTS` points also get dots), groups in order of their key
    values. Groups are labelled without the `config.` prefix: the keys head the legend and each
    entry is the values; the legend is in the axes for a few groups, beside them for more. Past
    `LEGEND_MAX` groups (a legend of a hundred entries reads badly and takes most of a second
    to draw), colour encodes the first numeric key, shown by a colourbar, and a note says so.

  Raises:
    ValueError: a missing column (listing the frame's columns), or no rows.
  """
  groups = _split_curves(curves, "plot_curves")
  metric = curves.attrs.get("metric")
  palette = _palette(list(groups), curves.attrs.get("keys"))
  fig = _figure(*SINGLE_SIZE)
  ax = fig.add_axes(_box_fraction(_single_box(), SINGLE_SIZE))
  handles = _draw_curves(ax, groups, palette.colors, palette.labels, log_y)
  ax.set_ylabel(metric or "value")
  ax.set_title(title if title is not None else _curves_title(metric, groups, curves.attrs))
  _show_groups(fig, [ax], palette, handles, inside=True)
  return fig


def plot_vs_param(summary: pd.DataFrame, param: str, *, title: str | None = None) -> Figure:
  """A metric's per-group statistic against one hyperparameter, with confidence error bars.

  Args:
    summary: `stats.summarize`' frame: the group key columns (`config.<key>`), `mean`,
      `ci_low`, `ci_high` (and `n`); `.attrs["keys"]`, `["metric"]`, `["stat"]` and
      `["higher_is_better"]` are used when present.
    param: the x column, `config.<key>` or `<key>` alone.
    title: the axes' title; defaults to "<metric> vs <key>".

  Returns:
    The figure: one axes; x is `param` (log-scaled when all values are positive, span at least
    a factor 10 and are more evenly spaced on a log axis than on a linear one; non-numeric values
    are categories in order), y the mean with error bars from `ci_low` to `ci_high`. One line per
    combination of the summary's other group keys, sorted by x.

  Raises:
    ValueError: `param` is not a column, or required columns are missing.
  """
  _require(summary, SUMMARY_COLUMNS, "plot_vs_param", "stats.summarize")
  column = _resolve_key(summary, param, "param")
  others = [key for key in _group_key_columns(summary) if key != column]
  x_raw = summary[column]
  numeric = _is_numeric(x_raw)
  if numeric:
    x_all = x_raw.to_numpy(dtype=float)
    levels = None
  else:
    levels = _levels(x_raw)
    x_all = _positions(x_raw, levels).astype(float)
  series = _series(summary, others)
  palette = _palette(list(series), None)
  fig = _figure(*SINGLE_SIZE)
  ax = fig.add_axes(_box_fraction(_single_box(), SINGLE_SIZE))
  handles = []
  for (label, rows), color in zip(series.items(), palette.colors, strict=True):
    order = np.argsort(x_all[rows], kind="stable")
    idx = rows[order]
    x = x_all[idx]
    mean = summary["mean"].to_numpy(dtype=float)[idx]
    low = summary["ci_low"].to_numpy(dtype=float)[idx]
    high = summary["ci_high"].to_numpy(dtype=float)[idx]
    # A group of one run has no interval (NaN): a bare point, not a missing one.
    yerr = np.nan_to_num(np.stack([mean - low, high - mean]), nan=0.0).clip(min=0.0)
    container = ax.errorbar(x, mean, yerr=yerr, color=color, marker="o", markersize=4,
                            capsize=3, linewidth=1.2, elinewidth=1.0, label=label or None)
    handles.append(container)
  if numeric and _wants_log_x(x_all):
    log_axis(ax.xaxis, ax.set_xscale)
  elif numeric:
    ax.xaxis.set_major_locator(MaxNLocator(TICKS))
  else:
    ax.set_xticks(range(len(levels)), [_format_level(v) for v in levels])
    ax.set_xlim(-0.5, len(levels) - 0.5)  # the end categories off the frame's edges
  means = summary["mean"].to_numpy(dtype=float)
  if spans_decades(means):
    log_axis(ax.yaxis, ax.set_yscale)
  else:
    ax.yaxis.set_major_locator(MaxNLocator(TICKS))
  ax.grid(True, alpha=0.3)
  key = _short(column)
  ax.set_xlabel(key)
  ax.set_ylabel(_stat_label(summary.attrs))
  metric = summary.attrs.get("metric")
  ax.set_title(title if title is not None else f"{metric or 'value'} vs {key}")
  _show_groups(fig, [ax], palette._replace(title=", ".join(_short(k) for k in others)),
               handles, inside=True)
  return fig


def plot_heatmap(summary: pd.DataFrame, x: str, y: str, *, value: str = "mean",
                 title: str | None = None) -> Figure:
  """A grid over two hyperparameters, each cell coloured and annotated by its group's statistic.

  Args:
    summary: `stats.summarize`' frame with one row per (x, y) pair (group by those two keys
      only); `.attrs["metric"]`, `["stat"]` and `["higher_is_better"]` are used when present.
    x: the column along x, `config.<key>` or `<key>`.
    y: the column along y, likewise.
    value: the numeric column that colours and annotates the cells (`mean`, `median`, `iqm`...).
    title: the axes' title; defaults to "<metric>: <y> x <x>".

  Returns:
    The figure: one axes with an image of (y levels, x levels) cells, lowest values at the
    bottom left, and a colourbar. Better is brighter (viridis; reversed when lower is better).
    Each present cell's text is the value (`.3g`) with `n=<runs>` under it (when the summary has
    `n`); missing cells are blank: no text, NaN (masked) in the image.

  Raises:
    ValueError: an unknown column, x == y, a non-numeric value column, or several rows per cell.
  """
  x_col, y_col = _resolve_key(summary, x, "x"), _resolve_key(summary, y, "y")
  if x_col == y_col:
    raise ValueError(f"plot_heatmap: x and y are both {x_col!r}; give two different keys")
  numeric = [c for c in summary.columns if pd.api.types.is_numeric_dtype(summary[c])
             and not pd.api.types.is_bool_dtype(summary[c])]
  if value not in numeric:
    raise ValueError(f"plot_heatmap: value column {value!r} is not a numeric column of the "
                     f"summary; valid: {', '.join(map(str, numeric))}")
  repeated = summary.duplicated([x_col, y_col])
  if repeated.any():
    others = [_short(k) for k in _group_key_columns(summary) if k not in (x_col, y_col)]
    raise ValueError(
        f"plot_heatmap: {int(repeated.sum())} (x, y) cells have several rows; summarize with "
        f"by=[{x_col!r}, {y_col!r}] only, or select rows of one value of the other keys "
        f"({', '.join(others) or 'none'})")
  x_levels, y_levels = _levels(summary[x_col]), _levels(summary[y_col])
  grid = np.full((len(y_levels), len(x_levels)), np.nan)  # (Y, X)
  counts = np.zeros(grid.shape, dtype=int)
  has_n = "n" in summary.columns
  rows, cols = _positions(summary[y_col], y_levels), _positions(summary[x_col], x_levels)
  grid[rows, cols] = summary[value].to_numpy(dtype=float)
  if has_n:
    counts[rows, cols] = summary["n"].to_numpy()
  present = ~np.isnan(grid)

  x_labels = [_format_level(v) for v in x_levels]
  y_labels = [_format_level(v) for v in y_levels]
  cell_w = max(HEAT_CELL[0], CHAR_WIDTH * max(map(len, x_labels)) + 0.1)
  rotate = CHAR_WIDTH * max(map(len, x_labels)) > cell_w - 0.1
  left = 0.45 + CHAR_WIDTH * max(map(len, y_labels)) + 0.1
  bottom = MARGINS["bottom"] + (0.5 * CHAR_WIDTH * max(map(len, x_labels)) if rotate else 0.0)
  finite = grid[present]
  norm = Normalize(vmin=finite.min() if finite.size else 0.0,
                   vmax=finite.max() if finite.size else 1.0)
  chars = max(len(f"{norm.vmin:.3g}"), len(f"{norm.vmax:.3g}")) + 1
  right = 0.15 + COLORBAR[0] + CHAR_WIDTH * chars + COLORBAR[1]
  axes_w, axes_h = cell_w * len(x_levels), HEAT_CELL[1] * len(y_levels)
  label = _stat_label(summary.attrs, value)
  # Tall enough for the colourbar's label along it.
  axes_w, axes_h = max(axes_w, 2.5), max(axes_h, 1.6, 0.85 * CHAR_WIDTH * len(label))
  width = left + axes_w + right
  height = bottom + axes_h + MARGINS["top"]
  fig = _figure(width, height)
  ax = fig.add_axes(_box_fraction((left, bottom, axes_w, axes_h), (width, height)))
  cax = fig.add_axes(_box_fraction((left + axes_w + 0.15, bottom, COLORBAR[0], axes_h),
                                   (width, height)))
  higher = summary.attrs.get("higher_is_better")
  cmap = colormaps["viridis" if higher is not False else "viridis_r"]
  image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower",
                    aspect="auto", interpolation="nearest")
  for i, j in zip(*np.nonzero(present), strict=True):
    text = f"{grid[i, j]:.3g}" + (f"\nn={counts[i, j]}" if has_n else "")
    r, g, b, _ = cmap(norm(grid[i, j]))
    # Dark text on the light end of the map, light text on the dark end.
    shade = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
    ax.text(j, i, text, ha="center", va="center", fontsize="small", color=shade)
  ax.set_xticks(range(len(x_levels)), x_labels, rotation=30 if rotate else 0,
                ha="right" if rotate else "center")
  ax.set_yticks(range(len(y_levels)), y_labels)
  ax.set_xlabel(_short(x_col))
  ax.set_ylabel(_short(y_col))
  colorbar = fig.colorbar(image, cax=cax)
  colorbar.locator = MaxNLocator(TICKS)
  colorbar.update_ticks()
  colorbar.set_label(label)
  metric = summary.attrs.get("metric")
  ax.set_title(title if title is not None else
               f"{metric or value}: {_short(y_col)} x {_short(x_col)}")
  return fig


def plot_diagnostic(metrics: pd.DataFrame, runs: pd.DataFrame, diagnostic: str,
                    keys: Sequence[str] | None = None, by=None) -> Figure:
  """A diagnostic's scalars over training per group: one panel per key, bands over seeds.

  Args:
    metrics: `loading.load_metrics`' frame (`run, step, name, value`).
    runs: `loading.load_runs`' frame, for the groups.
    diagnostic: the diagnostic's name; its scalars are the metrics `diag/<diagnostic>/<key>`.
    keys: which keys; None takes the top-level ones (no further `/`, so not per-layer keys such
      as `dense_0/kernel/grad_norm`), or every key when none is top-level.
    by: the group keys, passed to `stats.curve_stats` (None: its default).

  Returns:
    The figure: one panel per key (titled by it) in a grid, groups coloured alike in every
    panel, one legend beside the grid.

  Raises:
    ValueError: no scalars of `diagnostic` (naming the diagnostics there are) or unknown keys
      (listing the valid ones).
  """
  from gmf_jax.analysis import stats  # the lead's module; imported here so plots load alone

  prefix = f"diag/{diagnostic}/"
  scalars = diagnostic_scalars(_names(metrics))
  available = scalars.get(diagnostic, [])
  if not available:
    found = sorted(scalars)
    raise ValueError(f"plot_diagnostic: no scalars of diagnostic {diagnostic!r} "
                     f"(no metric {prefix}<key>); diagnostics with scalars: "
                     f"{', '.join(found) or 'none'}")
  if keys is None:
    keys = [k for k in available if "/" not in k] or available
  else:
    unknown = [k for k in keys if k not in available]
    if unknown:
      raise ValueError(f"plot_diagnostic: unknown key(s) {', '.join(map(repr, unknown))} of "
                       f"diagnostic {diagnostic!r}; valid: {', '.join(available)}")
  curves = {key: stats.curve_stats(metrics, runs, prefix + key, by=by) for key in keys}
  return _panels(curves, title=f"diagnostic: {diagnostic}")


def diagnostic_scalars(names) -> dict[str, list[str]]:
  """Diagnostic -> the keys of its scalars, from metric names `diag/<diagnostic>/<key>`.

  Args:
    names: metric names (e.g. a metrics frame's distinct `name`s), in the order to keep.

  Returns:
    Each diagnostic with scalars, in order of appearance, and its keys (`grad_norm`,
    `dense_0/kernel/grad_norm`...), in order of appearance.
  """
  out: dict[str, list[str]] = {}
  for name in names:
    split, rest = split_name(name)
    diagnostic, _, key = rest.partition("/")
    if split == DIAGNOSTICS and key:
      out.setdefault(diagnostic, []).append(key)
  return out


class NamedFigure(NamedTuple):
  """A figure with the file name and caption it is saved under."""

  file: str
  caption: str
  figure: Figure


def population_figures(metrics: pd.DataFrame, runs: pd.DataFrame, *, by=None,
                       title: str | None = None) -> list[NamedFigure]:
  """The figures of a population (a sweep, an ensemble, any runs): every run's curves, each
  group's mean bold (`plot_members`).

  Args:
    metrics: `loading.load_metrics`' frame of the runs.
    runs: `loading.load_runs`' frame: which runs, and their groups.
    by: the group keys (None: the keys that differ between the runs, less seeds and
      bookkeeping: `stats.group_keys`).
    title: of `metrics.png` (default: how many runs and what is drawn).

  Returns:
    `metrics.png`: a panel per training and eval metric (`train/loss`, `eval/accuracy`...), in
    the order of a run's own `metrics.png`; and per diagnostic with top-level scalars
    (`diag/<name>/<key>`, `key` without a `/`: a summary every diagnostic's own scalars give,
    users' too), `diag_<name>.png` with a panel per such key. Nothing without rows.
  """
  finite = metrics[np.isfinite(metrics["value"].to_numpy(dtype=float))]
  names = _names(finite)  # a metric that is NaN everywhere (diverged) has nothing to draw
  training = ordered_names(n for n in names if split_name(n)[0] != DIAGNOSTICS)
  count = metrics["run"].nunique()
  if title is None:
    title = f"{count} run{'s' * (count != 1)}: each run thin, each group's mean bold"
  out = []
  if training:
    out.append(NamedFigure("metrics.png", "every run's training and eval metrics, each group's "
                           "mean bold", plot_members(metrics, runs, training, by=by,
                                                     title=title)))
  for diagnostic, keys in diagnostic_scalars(names).items():
    top = [f"diag/{diagnostic}/{k}" for k in keys if "/" not in k]
    if top:
      out.append(NamedFigure(
          f"diag_{file_safe(diagnostic)}.png", f"diagnostic {diagnostic}: every run's summary "
          "scalars, each group's mean bold",
          plot_members(metrics, runs, top, by=by, title=f"diagnostic: {diagnostic}")))
  return out


def plot_members(metrics: pd.DataFrame, runs: pd.DataFrame, names: Sequence[str], *, by=None,
                 title: str | None = None) -> Figure:
  """Every run's curve of each metric in `names`, a panel per metric: each run a thin line in
  its group's colour, each group's mean a bold line.

  Args:
    metrics: `loading.load_metrics`' frame (`run, step, name, value`); other names are ignored,
      and so are non-finite values.
    runs: `loading.load_runs`' frame: which runs to draw (those with rows), and their groups.
    names: the metrics, a panel each, in this order.
    by: the group keys (None: `stats.group_keys` of the runs drawn).
    title: the figure's title.

  Returns:
    The figure: one axes per name (titled by it), in a grid. Each holds two LineCollections:
    gid `"runs"`, a segment per run with rows of that metric, and gid `"means"`, a segment per
    group (the mean over its runs at each step), groups in order of their key values. A curve
    of one point is also drawn as a dot. One legend (a colourbar past `LEGEND_MAX` groups) for
    all panels, an entry per group; none for a single group.

  Raises:
    ValueError: no names, or a name without finite rows (listing the metrics there are).
  """
  from gmf_jax.analysis import stats  # the lead's module; imported here so plots load alone

  names = list(names)
  curves = _run_curves(metrics, names)
  missing = [n for n in names if not curves.get(n)]
  if not names or missing:
    raise ValueError(f"plot_members: no finite rows of {', '.join(missing) or 'any metric'}; "
                     f"metrics: {', '.join(_names(metrics)) or 'none'}")
  drawn = {run for by_run in curves.values() for run in by_run}
  chosen = runs[runs["run"].astype(str).isin(drawn)].reset_index(drop=True)
  labels, keys = stats.run_groups(chosen, by)
  group_of = dict(zip(chosen["run"].astype(str), labels, strict=True))
  groups = _order_groups(list(dict.fromkeys(labels)), keys)
  palette = _palette(groups, keys)
  colors = dict(zip(groups, to_rgba_array(palette.colors), strict=True))
  fig, axes = figure_with_panels(len(names), min(GRID_COLUMNS, len(names)), PANEL_SIZE, title)
  for ax, name in zip(axes, names, strict=True):
    _draw_members(ax, curves[name], group_of, colors)
    ax.set_title(name, y=1.0)  # a set height: no search for a free spot
  handles = [Line2D([], [], color=colors[g], label=label, linewidth=MEAN_WIDTH)
             for g, label in zip(groups, palette.labels, strict=True)]
  _show_groups(fig, axes, palette, handles, inside=False)
  return fig


def file_safe(name: str) -> str:
  """`name` as part of a file name: runs of anything but letters, digits and `_.=-` -> `_`."""
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def _names(metrics: pd.DataFrame) -> list[str]:
  """The metric names of a `load_metrics` frame, in order of appearance."""
  return [str(n) for n in pd.unique(metrics["name"])]


def _panels(curves_by_key: Mapping[str, pd.DataFrame], title: str | None = None) -> Figure:
  """A grid of `curve_stats` frames, one panel per key, sharing colours and one legend."""
  if not curves_by_key:
    raise ValueError("plot_diagnostic: no keys to plot")
  split = {key: _split_curves(frame, "plot_diagnostic") for key, frame in curves_by_key.items()}
  all_groups = list(dict.fromkeys(g for groups in split.values() for g in groups))
  first = next(iter(curves_by_key.values()))
  group_keys = first.attrs.get("keys")
  all_groups = _order_groups(all_groups, group_keys)
  palette = _palette(all_groups, group_keys)
  colors = dict(zip(all_groups, palette.colors, strict=True))
  labels = dict(zip(all_groups, palette.labels, strict=True))
  fig, axes = figure_with_panels(len(split), min(GRID_COLUMNS, len(split)), PANEL_SIZE, title)
  handles = {}
  for ax, (key, groups) in zip(axes, split.items(), strict=True):
    ordered = {g: groups[g] for g in all_groups if g in groups}
    drawn = _draw_curves(ax, ordered, [colors[g] for g in ordered],
                         [labels[g] for g in ordered], None)
    handles.update(zip(ordered, drawn, strict=True))
    ax.set_title(key)
  _show_groups(fig, axes, palette, [handles[g] for g in all_groups], inside=False)
  return fig


# --- drawing -------------------------------------------------------------------------------------

def _draw_curves(ax, groups: Mapping[str, _Curve], colors, labels, log_y) -> list:
  """One mean line and one band per group; returns a legend handle per group.

  All groups' bands are one PolyCollection (`ax.collections[0]`), their means one
  LineCollection (`ax.collections[1]`) and the points of sparse curves one scatter: a hundred
  `fill_between` and `plot` calls take most of a second to make and draw, three collections of
  a hundred paths a tenth of that.
  """
  many = len(groups) > CATEGORICAL_MAX
  rgba = to_rgba_array(colors) if colors else np.zeros((0, 4))
  bands, means, dots, dot_colors, handles = [], [], [], [], []
  for curve, color, label in zip(groups.values(), rgba, labels, strict=True):
    keep = np.isfinite(curve.low) & np.isfinite(curve.high)
    steps = curve.steps[keep]
    # (2 K, 2) vertices: along the lower edge, then back along the upper one.
    bands.append(np.concatenate([np.stack([steps, curve.low[keep]], axis=1),
                                 np.stack([steps[::-1], curve.high[keep][::-1]], axis=1)]))
    finite = np.isfinite(curve.mean)
    means.append(np.stack([curve.steps[finite], curve.mean[finite]], axis=1))  # (K, 2)
    sparse = finite.sum() <= MARKER_MAX_POINTS
    if sparse:  # few points (an eval metric, a diagnostic) stay visible as dots
      dots.append(means[-1])
      dot_colors.append(np.broadcast_to(color, (len(means[-1]), 4)))
    handles.append(Line2D([], [], color=color, label=label, marker="o" if sparse else None,
                          markersize=3, linewidth=1.3))
  band_colors = rgba.copy()
  band_colors[:, 3] *= 0.1 if many else 0.2
  ax.add_collection(PolyCollection(bands, facecolors=band_colors, linewidths=0, zorder=1.5),
                    autolim=True)
  ax.add_collection(LineCollection(means, colors=rgba, linewidths=0.9 if many else 1.3,
                                   zorder=2), autolim=True)
  if dots:
    ax.scatter(*np.concatenate(dots).T, s=9, c=np.concatenate(dot_colors), zorder=2.5,
               linewidths=0)
  ax.set_xlabel("step")
  ax.grid(True, alpha=0.3)
  # A few round ticks per axis: each tick is several artists and a text to lay out.
  ax.xaxis.set_major_locator(MaxNLocator(TICKS))
  values = np.concatenate([curve.mean for curve in groups.values()])
  if spans_decades(values) if log_y is None else log_y:
    log_axis(ax.yaxis, ax.set_yscale)
  else:
    ax.yaxis.set_major_locator(MaxNLocator(TICKS))
  ax.autoscale_view()
  return handles


def _draw_members(ax, curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  group_of: Mapping[str, str], colors: Mapping[str, np.ndarray]) -> None:
  """Each run's curve thin (one LineCollection, gid "runs") and each group's mean bold (one
  LineCollection, gid "means"), in the groups' colours; one-point curves also as dots."""
  runs = [run for run in curves if run in group_of]
  per_group: dict[str, list[str]] = {}
  for run in runs:
    per_group.setdefault(group_of[run], []).append(run)
  groups = [g for g in colors if g in per_group]  # the palette's order
  alpha = RUN_ALPHA[max(map(len, per_group.values()), default=0) > FEW_RUNS]
  lines = [np.column_stack(curves[run]) for run in runs]  # (K, 2) each
  steps = np.unique(np.concatenate([line[:, 0] for line in lines])) if lines else []
  if len(steps) == 1:  # logged at one step only (a diagnostic at the end): a strip per group
    _draw_strips(ax, lines, [group_of[run] for run in runs], groups, colors, alpha, steps[0])
    return
  line_colors = np.array([colors[group_of[run]] for run in runs]).reshape(-1, 4)  # (N, 4)
  line_colors[:, 3] = alpha
  ax.add_collection(LineCollection(lines, colors=line_colors, linewidths=RUN_WIDTH, zorder=2,
                                   gid="runs"), autolim=True)
  means = [_mean_curve([curves[run] for run in per_group[g]]) for g in groups]
  ax.add_collection(LineCollection(means, colors=[colors[g] for g in groups],
                                   linewidths=MEAN_WIDTH, zorder=3, gid="means"), autolim=True)
  # A line needs two points: a metric logged once (a diagnostic at the end) is a dot per run.
  dots = [(line, color) for line, color in zip(lines, line_colors, strict=True)
          if len(line) == 1]
  dots += [(mean, colors[g]) for mean, g in zip(means, groups, strict=True)
           if len(mean) <= MARKER_MAX_POINTS]
  if dots:
    ax.scatter(*np.concatenate([d for d, _ in dots]).T, s=10, zorder=3.5, linewidths=0,
               c=np.concatenate([np.broadcast_to(c, (len(d), 4)) for d, c in dots]))
  ax.set_xlabel("step")
  ax.grid(True, alpha=0.3)
  ax.xaxis.set_major_locator(MaxNLocator(TICKS))
  if lines and spans_decades(np.concatenate(lines)[:, 1]):
    log_axis(ax.yaxis, ax.set_yscale)
  else:
    ax.yaxis.set_major_locator(MaxNLocator(TICKS))
  ax.autoscale_view()


def _draw_strips(ax, points: list[np.ndarray], run_groups: list[str], groups: list[str],
                 colors: Mapping[str, np.ndarray], alpha: float, step: float) -> None:
  """Runs' values at one step, side by side: a column of dots per group (gid "runs", one
  segment of one point per run) and its mean as a bold bar (gid "means")."""
  column = {g: i for i, g in enumerate(groups)}
  count = collections.Counter(run_groups)
  seen: collections.Counter = collections.Counter()
  dots = []
  for point, group in zip(points, run_groups, strict=True):
    # Spread over the column's middle, in order, so equal values stay apart.
    offset = (seen[group] + 0.5) / count[group] - 0.5 if count[group] > 1 else 0.0
    seen[group] += 1
    dots.append([[column[group] + 0.5 * offset, point[0, 1]]])
  dot_colors = np.array([colors[g] for g in run_groups]).reshape(-1, 4)
  dot_colors[:, 3] = max(alpha, 0.7)
  ax.add_collection(LineCollection(dots, gid="runs"), autolim=True)
  ax.scatter(*np.concatenate(dots).T, s=14, c=dot_colors, linewidths=0, zorder=3)
  means = []
  for g in groups:
    mean = np.mean([p[0, 1] for p, r in zip(points, run_groups, strict=True) if r == g])
    means.append([[column[g] - 0.35, mean], [column[g] + 0.35, mean]])
  ax.add_collection(LineCollection(means, colors=[colors[g] for g in groups],
                                   linewidths=MEAN_WIDTH, zorder=4, gid="means"), autolim=True)
  ax.set_xlim(-0.6, len(groups) - 0.4)
  ax.set_xticks([])
  ax.set_xlabel(f"step {step:g}" + (", a column per group" if len(groups) > 1 else ""))
  ax.grid(True, axis="y", alpha=0.3)
  ax.yaxis.set_major_locator(MaxNLocator(TICKS))
  ax.autoscale_view()


def _mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
  """(K, 2): at each step any of `curves` has, the mean of the values there."""
  steps = np.concatenate([c[0] for c in curves])
  values = np.concatenate([c[1] for c in curves])
  uniq, index = np.unique(steps, return_inverse=True)
  return np.column_stack([uniq, np.bincount(index, values) / np.bincount(index)])


def _run_curves(metrics: pd.DataFrame, names: Sequence[str]
                ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """Metric -> run -> (steps, values): its finite rows, sorted by step; read with one sort of
  the frame, not a selection per run and metric."""
  rows = metrics[metrics["name"].isin(names)]
  name = rows["name"].astype("category").cat
  run = rows["run"].astype("category").cat
  steps = rows["step"].to_numpy(dtype=float)
  values = rows["value"].to_numpy(dtype=float)
  keep = np.isfinite(steps) & np.isfinite(values)
  name_codes, run_codes = name.codes.to_numpy()[keep], run.codes.to_numpy()[keep]
  order = np.lexsort((steps[keep], run_codes, name_codes))
  name_codes, run_codes = name_codes[order], run_codes[order]
  steps, values = steps[keep][order], values[keep][order]
  change = (name_codes[1:] != name_codes[:-1]) | (run_codes[1:] != run_codes[:-1])
  starts = np.flatnonzero(np.concatenate([[True], change])) if len(order) else np.zeros(0, int)
  ends = np.append(starts[1:], len(order))
  out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
    by_run = out.setdefault(str(name.categories[name_codes[lo]]), {})
    by_run[str(run.categories[run_codes[lo]])] = (steps[lo:hi], values[lo:hi])
  return out


class _Palette(NamedTuple):
  """How groups are told apart: a colour and a legend entry each, or a colour scale."""

  colors: list  # one per group, in the groups' order
  labels: list[str]  # legend entries
  title: str | None  # the legend's title (the group keys)
  scale: tuple | None = None  # (key, norm, cmap): colour encodes this key; a colourbar, no legend
  note: str | None = None  # said in a corner when a legend or colourbar cannot tell every group


def _palette(groups: list[str], keys) -> _Palette:
  labels, title = _legend_labels(groups, keys)
  if len(groups) <= LEGEND_MAX:
    return _Palette(_colors(len(groups), _single_numeric_key(groups, keys)), labels, title)
  split = [_split_label(g, keys) for g in groups]
  if keys and all(s is not None for s in split):
    for i, key in enumerate(keys):
      try:
        values = np.array([float(s[i]) for s in split])
      except ValueError:
        continue
      if np.unique(values).size > 1:
        norm = (LogNorm if _wants_log_x(values) else Normalize)(values.min(), values.max())
        note = None
        if len(keys) > 1:  # groups that differ only in the other keys share a colour
          note = f"{len(groups)} groups of {title}; colour shows {_short(key)}"
        return _Palette(list(SEQUENTIAL(norm(values))), labels, title, (key, norm, SEQUENTIAL),
                        note)
  return _Palette(_colors(len(groups), False), labels, title,
                  note=f"{len(groups)} groups: too many to label")


def _show_groups(fig: Figure, axes: list, palette: _Palette, handles: list,
                 inside: bool) -> None:
  """The legend (in the axes for a few groups when `inside`, else beside), or the colourbar of
  the key that colour encodes; a note in the corner when some groups cannot be told apart."""
  count = len(palette.colors)
  if count <= 1:
    return
  if palette.note:  # on a strip of its own under the x labels
    width, height = fig.get_size_inches()
    boxes = [ax.get_position() for ax in fig.axes]
    fig.set_size_inches(width, height + NOTE_HEIGHT)
    for ax, box in zip(fig.axes, boxes, strict=True):
      ax.set_position((box.x0, (box.y0 * height + NOTE_HEIGHT) / (height + NOTE_HEIGHT), box.width,
                       box.height * height / (height + NOTE_HEIGHT)))
    fig.text(0.99, 0.05 / (height + NOTE_HEIGHT), palette.note, ha="right", va="bottom",
             fontsize="x-small")
  if palette.scale is not None:
    _colorbar_beside(fig, axes, *palette.scale)
  elif count > LEGEND_MAX:
    return  # no legend: the note says why
  elif inside and count <= LEGEND_INSIDE_MAX:
    axes[0].legend(handles=handles, fontsize="small", title=palette.title or None,
                   title_fontsize="small")
  else:
    _legend_beside(fig, axes, handles, palette.title or None)


def _legend_beside(fig: Figure, axes: list, handles: list, title: str | None) -> None:
  """A legend right of `axes` (their union), in columns that fit the figure's height; the
  figure is widened by the legend's measured width, the axes keep their size in inches."""
  fontsize = "small" if len(handles) <= SMALL_LEGEND_MAX else "x-small"
  top = max(ax.get_position().y1 for ax in axes) * fig.get_size_inches()[1]
  points = FontProperties(size=fontsize).get_size_in_points()
  row = points * (1 + 0.5) / 72  # inches per entry: the text plus labelspacing (0.5 em)
  rows = max(1, int((top - 0.1) / row) - (2 if title else 0))
  legend = fig.legend(handles=handles, loc="upper left", ncol=math.ceil(len(handles) / rows),
                      fontsize=fontsize, title=title, title_fontsize=fontsize, frameon=False,
                      borderaxespad=0, columnspacing=1.0, handlelength=1.5)
  # Measuring lays the texts out once; drawing reuses that layout from matplotlib's cache.
  legend_w = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
  left, width = _widen(fig, axes, LEGEND_PAD + legend_w + 0.1)
  legend.set_bbox_to_anchor((left / width, top / fig.get_size_inches()[1]),
                            transform=fig.transFigure)


def _colorbar_beside(fig: Figure, axes: list, key: str, norm, cmap) -> None:
  """A colourbar right of `axes` for the key that the curves' colours encode."""
  # Room for the bar, its tick labels (about as long as the extremes) and its label.
  chars = max(len(f"{norm.vmin:g}"), len(f"{norm.vmax:g}")) + 1
  left, width = _widen(fig, axes, LEGEND_PAD + COLORBAR[0] + CHAR_WIDTH * chars + COLORBAR[1])
  bottom = min(ax.get_position().y0 for ax in axes)
  top = max(ax.get_position().y1 for ax in axes)
  cax = fig.add_axes((left / width, bottom, COLORBAR[0] / width, top - bottom))
  colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
  if isinstance(norm, LogNorm):
    log_axis(cax.yaxis, lambda _: None)
  else:
    colorbar.locator = MaxNLocator(TICKS)
    colorbar.update_ticks()
  colorbar.set_label(_short(key))


def _widen(fig: Figure, axes: list, extra: float) -> tuple[float, float]:
  """Makes room of `extra` inches right of `axes`, keeping every axes' size in inches.

  Returns:
    Where the room starts (inches from the left, after LEGEND_PAD) and the new figure width.
  """
  width, height = fig.get_size_inches()
  boxes = [ax.get_position() for ax in fig.axes]
  right = max(ax.get_position().x1 for ax in axes) * width
  new_width = max(width, right + extra)
  if new_width > width:
    fig.set_size_inches(new_width, height)
    for ax, b in zip(fig.axes, boxes, strict=True):
      ax.set_position((b.x0 * width / new_width, b.y0, b.width * width / new_width, b.height))
  return right + LEGEND_PAD, new_width


def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI)
  FigureCanvasAgg(fig)
  return fig


def _single_box() -> tuple[float, float, float, float]:
  w, h = SINGLE_SIZE
  return (MARGINS["left"], MARGINS["bottom"], w - MARGINS["left"] - MARGINS["right"],
          h - MARGINS["bottom"] - MARGINS["top"])


def _box_fraction(box, size) -> tuple[float, float, float, float]:
  x, y, w, h = box
  return (x / size[0], y / size[1], w / size[0], h / size[1])


def _colors(count: int, ordered: bool) -> list:
  """Distinct colours for a few groups; a sequential map for many groups of one numeric key
  (in value order, so the colour reads as the value), else tab20, else a wide sequential map."""
  if count <= CATEGORICAL_MAX:
    return [f"C{i}" for i in range(count)]
  if not ordered and count <= 20:
    return list(colormaps["tab20"](np.arange(count)))
  if ordered:
    return list(SEQUENTIAL(np.linspace(0.0, 1.0, count)))
  return list(colormaps["turbo"](np.linspace(0.05, 0.95, count)))


# --- labels and groups ---------------------------------------------------------------------------

class _Curve(NamedTuple):
  """One group's rows of a curve_stats frame, sorted by step."""

  steps: np.ndarray  # (K,)
  mean: np.ndarray  # (K,)
  low: np.ndarray  # (K,)
  high: np.ndarray  # (K,)
  n: np.ndarray  # (K,)


def _split_curves(curves: pd.DataFrame, who: str) -> dict[str, _Curve]:
  """Group label -> that group's arrays, groups ordered by their key values."""
  _require(curves, CURVE_COLUMNS, who, "stats.curve_stats")
  if curves.empty:
    raise ValueError(f"{who}: the curves frame has no rows (no finite values of the metric?)")
  # Columns to arrays once: every column access of a frame copies its attrs, and per group that
  # cost more than drawing.
  labels = curves["group"].astype(str).to_numpy()
  columns = [curves[c].to_numpy(dtype=float) for c in ("step", "mean", "low", "high", "n")]
  order = np.lexsort((columns[0], labels))  # by group, then step
  labels = labels[order]
  columns = [c[order] for c in columns]
  names, starts = np.unique(labels, return_index=True)
  bounds = dict(zip(names.tolist(), zip(starts, [*starts[1:], len(labels)], strict=True),
                    strict=True))
  groups = {label: _Curve(*(c[lo:hi] for c in columns)) for label, (lo, hi) in bounds.items()}
  ordered = _order_groups(list(pd.unique(curves["group"].astype(str))),
                          curves.attrs.get("keys"))
  return {label: groups[label] for label in ordered}


def _require(frame: pd.DataFrame, columns, who: str, source: str) -> None:
  missing = [c for c in columns if c not in frame.columns]
  if missing:
    raise ValueError(f"{who}: missing column(s) {', '.join(missing)} (expected {source}' "
                     f"frame); the frame has: {', '.join(map(str, frame.columns))}")


def _short(key: str) -> str:
  return key[len(CONFIG):] if key.startswith(CONFIG) else key


def _strip_config(label: str) -> str:
  # "config.a=1, config.b=2" -> "a=1, b=2": the prefix is common to every key, so it says nothing.
  return re.sub(r"(^|, )config\.", r"\1", label)


def _split_label(label: str, keys: Sequence[str] | None) -> list[str] | None:
  """The values of a "k1=v1, k2=v2" label for `keys` in order, or None if it is not one."""
  if not keys:
    return None
  names = [_short(k) for k in keys]
  label = _strip_config(label)
  # Cut at each known key rather than at ", ": values may be tuples with commas in them.
  values, rest = [], label
  for i, name in enumerate(names):
    if not rest.startswith(f"{name}="):
      return None
    rest = rest[len(name) + 1:]
    if i + 1 < len(names):
      cut = rest.find(f", {names[i + 1]}=")
      if cut < 0:
        return None
      values.append(rest[:cut])
      rest = rest[cut + 2:]
    else:
      values.append(rest)
  return values


def _legend_labels(groups: list[str], keys) -> tuple[list[str], str | None]:
  """Legend entries and title: with known keys, the keys go in the title and each entry is the
  group's values alone; otherwise each entry is the label without `config.` prefixes."""
  split = [_split_label(g, keys) for g in groups]
  if keys and all(s is not None for s in split):
    return [", ".join(s) for s in split], ", ".join(_short(k) for k in keys)
  return [_strip_config(g) for g in groups], None


def _order_groups(groups: list[str], keys) -> list[str]:
  """Groups by their key values (numbers as numbers, so 2 before 10); as given otherwise."""
  split = [_split_label(g, keys) for g in groups]
  if not keys or any(s is None for s in split):
    return groups
  order = sorted(range(len(groups)), key=lambda i: tuple(_sort_key(v) for v in split[i]))
  return [groups[i] for i in order]


def _sort_key(value: str):
  try:
    return (0, float(value), "")
  except ValueError:
    return (1, 0.0, value)


def _single_numeric_key(groups: list[str], keys) -> bool:
  if not keys or len(keys) != 1:
    return False
  values = [_split_label(g, keys) for g in groups]
  return all(v is not None and _sort_key(v[0])[0] == 0 for v in values)


def _curves_title(metric, groups: Mapping[str, _Curve], attrs) -> str:
  confidence = attrs.get("confidence")
  band = f"{confidence:.0%} CI" if isinstance(confidence, float) else "confidence band"
  counts = {int(np.nanmax(curve.n)) for curve in groups.values()}
  runs = ""
  if len(counts) == 1:  # a count that differs between groups is too long for a title
    runs = f", n={counts.pop()}" + (" per group" if len(groups) > 1 else "")
  return f"{metric or 'value'} (mean, {band}{runs})"


def _stat_label(attrs, value: str = "mean") -> str:
  metric, stat = attrs.get("metric"), attrs.get("stat")
  text = f"{value} of {stat} {metric}" if stat and metric else f"{value} of {metric or 'value'}"
  higher = attrs.get("higher_is_better")
  if higher is not None:
    text += " (higher is better)" if higher else " (lower is better)"
  return text


# --- columns and values --------------------------------------------------------------------------

def _group_key_columns(summary: pd.DataFrame) -> list[str]:
  keys = summary.attrs.get("keys")
  if keys:
    return [k for k in keys if k in summary.columns]
  return [c for c in summary.columns if str(c).startswith(CONFIG)]


def _resolve_key(summary: pd.DataFrame, name: str, role: str) -> str:
  """`name` or `config.<name>` as a column of `summary`; a ValueError lists the valid keys."""
  for column in (name, CONFIG + name):
    if column in summary.columns:
      return column
  valid = _group_key_columns(summary)
  raise ValueError(f"unknown {role} column {name!r}; valid: "
                   f"{', '.join(_short(k) for k in valid) or 'none (the summary has no keys)'}"
                   " (with or without the 'config.' prefix)")


def _is_numeric(column: pd.Series) -> bool:
  return (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
          and bool(column.notna().all()))


def _levels(column: pd.Series) -> list:
  """Distinct values in order: numbers by value, anything else by its text (numbers in it too)."""
  distinct: dict[str, object] = {}
  for v in column.tolist():
    distinct.setdefault(_format_level(v), v)  # by text: NaN != NaN would repeat it
  values = list(distinct.values())
  if _is_numeric(column):
    return sorted(values)
  return sorted(values, key=lambda v: _sort_key(_format_level(v)))


def _positions(column: pd.Series, levels: list) -> np.ndarray:
  """Each row's index in `levels`, matched by text (so NaN, which equals nothing, matches)."""
  index = {_format_level(v): i for i, v in enumerate(levels)}
  return np.array([index[_format_level(v)] for v in column], dtype=int)


def _format_level(value) -> str:
  if isinstance(value, float | np.floating):
    return f"{value:g}"
  return str(value)


def _series(summary: pd.DataFrame, others: list[str]) -> dict[str, np.ndarray]:
  """Label "v1, v2" of each combination of `others`' values (the legend's title names them) ->
  its row positions."""
  if not others:
    return {"": np.arange(len(summary))}
  combos: dict[tuple, list[int]] = {}
  for i, values in enumerate(zip(*(summary[k].tolist() for k in others), strict=True)):
    combos.setdefault(values, []).append(i)
  order = sorted(combos, key=lambda c: tuple(_sort_key(_format_level(v)) for v in c))
  return {", ".join(_format_level(v) for v in c): np.array(combos[c]) for c in order}


def _wants_log_x(values: np.ndarray) -> bool:
  """True for positive values spanning a factor of 10 or more that sit more evenly on a log axis
  than on a linear one (1e-4, 3e-4, 1e-3, ... or 1, 2, 4, ..., 32; not 10, 20, ..., 100)."""
  levels = np.unique(values[np.isfinite(values)])
  if levels.size < 2 or levels[0] <= 0 or levels[-1] / levels[0] < 10:
    return False
  if levels.size == 2:
    return True
  return bool(_spread(np.diff(np.log(levels))) <= _spread(np.diff(levels)))


def _spread(gaps: np.ndarray) -> float:
  return float(gaps.std() / gaps.mean())


def plot_pbt_lineage(events: Sequence[Mapping], initial: Mapping[str, Mapping[str, float]],
                     num_steps: int) -> Figure:
  """A PBT sweep's family tree: each explored hyperparameter over steps, a panel per key.

  Args:
    events: `sweep.json`'s `pbt.events` (step, member, from, before, after).
    initial: each member's first values (its `lineage.json`'s `initial`).
    num_steps: where the lines end.

  Returns:
    The figure: in each panel every member is a step line in its own colour (its value in use
    at each step); each copy is a dashed segment from the source's line to the copying member's
    new value at the copy's step, ending in a dot. A key whose values span more than a decade
    is drawn on a log axis.
  """
  members = list(initial)
  keys = list(next(iter(initial.values()), {}))
  colors = _colors(len(members), ordered=False)
  title = f"PBT: {len(events)} copies, {len(members)} members"
  fig, axes = figure_with_panels(len(keys), min(len(keys), GRID_COLUMNS), PANEL_SIZE, title)
  by_member = {m: sorted((e for e in events if e["member"] == m), key=lambda e: e["step"])
               for m in members}
  for ax, key in zip(axes, keys, strict=False):
    lines, values = {}, []
    for m in members:
      steps, ys = [0], [initial[m][key]]
      for e in by_member[m]:
        steps += [e["step"], e["step"]]
        ys += [ys[-1], e["after"][key]]
      steps.append(num_steps)
      ys.append(ys[-1])
      lines[m] = (np.asarray(steps, float), np.asarray(ys, float))
      values += ys
    ax.add_collection(LineCollection([np.column_stack(v) for v in lines.values()],
                                     colors=colors, linewidths=1.2))
    for e in events:
      source = lines.get(e["from"])
      if source is None or e["member"] not in lines:
        continue
      at = _value_at(source, e["step"])
      color = colors[members.index(e["member"])]
      ax.plot([e["step"], e["step"]], [at, e["after"][key]], ls="--", lw=0.8, color=color)
      ax.plot([e["step"]], [e["after"][key]], "o", ms=3, color=color)
    ax.set_xlim(0, num_steps)
    positive = [v for v in values if v > 0]
    if len(positive) == len(values) and spans_decades(np.asarray(positive)):
      log_axis(ax.yaxis, ax.set_yscale)
      ax.set_ylim(min(positive) / 1.3, max(positive) * 1.3)
    else:
      low, high = min(values), max(values)
      pad = 0.05 * (high - low or abs(high) or 1.0)
      ax.set_ylim(low - pad, high + pad)
    ax.set_title(_short(key))
    ax.set_xlabel("step")
  return fig


def _value_at(line: tuple[np.ndarray, np.ndarray], step: float) -> float:
  """A step line's value just before `step` (the source's value when it was copied)."""
  steps, ys = line
  before = np.nonzero(steps < step)[0]
  return float(ys[before[-1]]) if len(before) else float(ys[0])

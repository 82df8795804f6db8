"""Figures of analysis tables: what each draws (lines, bands, scales, cells) and its bad inputs.

The frames are built by hand in the shapes of `stats.curve_stats` and `stats.summarize`; the
diagnostic figure runs the real `curve_stats` over hand-built `load_runs`/`load_metrics` frames.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.image import imread

from gmf_jax.analysis import plots
from gmf_jax.runlog.plots import save_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LR = "config.optimizer.learning_rate"
BETA = "config.loss.beta"


def curve_frame(curves: dict, keys=(LR,), metric="train/loss") -> pd.DataFrame:
  """A curve_stats-shaped frame: label -> (steps, mean, half width), n=4 everywhere."""
  parts = []
  for label, (steps, mean, half) in curves.items():
    steps, mean = np.asarray(steps), np.asarray(mean, dtype=float)
    parts.append(pd.DataFrame({"group": label, "step": steps, "n": 4, "mean": mean,
                               "std": half, "sem": half / 2, "low": mean - half,
                               "high": mean + half}))
  frame = pd.concat(parts, ignore_index=True)
  frame.attrs.update(keys=list(keys), metric=metric)
  return frame


def lr_curves(lrs, steps=50) -> pd.DataFrame:
  s = np.arange(1, steps + 1) * 10
  return curve_frame({f"optimizer.learning_rate={lr:g}": (s, 1 + lr * np.exp(-s / 100), 0.1)
                      for lr in lrs})


def summary_frame(rows, keys=(LR, BETA), metric="eval/loss", higher=False) -> pd.DataFrame:
  """A summarize-shaped frame from (key values..., mean, half width, n) rows."""
  records = []
  for *values, mean, half, n in rows:
    record = dict(zip(keys, values, strict=True))
    record.update(group=", ".join(f"{k[len('config.'):]}={v}" for k, v in record.items()),
                  n=n, mean=mean, std=half, sem=half / 2, median=mean, iqm=mean,
                  ci_low=mean - half, ci_high=mean + half)
    records.append(record)
  frame = pd.DataFrame(records)
  frame.attrs.update(metric=metric, stat="final", keys=list(keys), higher_is_better=higher)
  return frame


def collections(ax):
  bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
  lines = [c for c in ax.collections if isinstance(c, LineCollection)]
  return bands, lines


# --- plot_curves ---------------------------------------------------------------------------------

def test_curves_draw_one_line_and_one_band_per_group_with_the_given_limits():
  steps = np.array([10, 20, 30, 40])
  frame = curve_frame({"optimizer.learning_rate=0.1": (steps, [4.0, 3.0, 2.5, 2.0], 0.5),
                       "optimizer.learning_rate=0.01": (steps, [4.0, 3.5, 3.0, 2.8], 0.25)})
  fig = plots.plot_curves(frame)
  (ax,) = fig.axes
  (bands,), (lines,) = collections(ax)
  assert len(bands.get_paths()) == len(lines.get_segments()) == 2
  # Groups in order of their values (0.01 before 0.1); each band spans exactly low..high.
  for path, segment, half, mean in zip(bands.get_paths(), lines.get_segments(), [0.25, 0.5],
                                       [[4.0, 3.5, 3.0, 2.8], [4.0, 3.0, 2.5, 2.0]],
                                       strict=True):
    np.testing.assert_allclose(segment, np.stack([steps, mean], axis=1))
    # Along the lower edge, back along the upper one (then the closing vertex).
    lower, upper = path.vertices[:4], path.vertices[4:8][::-1]
    np.testing.assert_allclose(lower, np.stack([steps, np.subtract(mean, half)], axis=1))
    np.testing.assert_allclose(upper, np.stack([steps, np.add(mean, half)], axis=1))
  legend = ax.get_legend()
  assert legend.get_title().get_text() == "optimizer.learning_rate"  # the keys, once
  assert [t.get_text() for t in legend.get_texts()] == ["0.01", "0.1"]
  assert ax.get_yscale() == "linear"
  assert "train/loss" in ax.get_title() and "n=4 per group" in ax.get_title()


def test_curves_order_groups_by_number_and_drop_the_config_prefix():
  fig = plots.plot_curves(lr_curves([10, 2, 0.5]))
  texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert texts == ["0.5", "2", "10"]  # numeric order, not "10" < "2"
  # Labels of unknown keys keep their text, less the prefix.
  frame = curve_frame({"config.a=1, config.b=x": ([1, 2], [1.0, 2.0], 0.1),
                       "config.a=2, config.b=y": ([1, 2], [1.0, 2.0], 0.1)}, keys=())
  legend = plots.plot_curves(frame).axes[0].get_legend()
  assert [t.get_text() for t in legend.get_texts()] == ["a=1, b=x", "a=2, b=y"]


def test_curves_values_with_commas_are_split_at_the_known_keys():
  keys = ["config.model.features", "config.loss.beta"]
  frame = curve_frame({"model.features=(8, 4), loss.beta=2": ([1, 2], [1.0, 2.0], 0.1),
                       "model.features=(16,), loss.beta=1": ([1, 2], [1.0, 2.0], 0.1)}, keys)
  legend = plots.plot_curves(frame).axes[0].get_legend()
  assert legend.get_title().get_text() == "model.features, loss.beta"
  assert sorted(t.get_text() for t in legend.get_texts()) == ["(16,), 1", "(8, 4), 2"]


def test_curves_choose_log_y_only_when_the_means_span_decades():
  s = np.arange(1, 101)
  decades = curve_frame({"all": (s, 100.0 * np.exp(-s / 10) + 1e-3, 0.0)}, keys=())
  narrow = curve_frame({"all": (s, 1.0 + np.exp(-s / 10), 0.0)}, keys=())
  assert plots.plot_curves(decades).axes[0].get_yscale() == "log"
  assert plots.plot_curves(narrow).axes[0].get_yscale() == "linear"
  assert plots.plot_curves(decades, log_y=False).axes[0].get_yscale() == "linear"
  assert plots.plot_curves(narrow, log_y=True).axes[0].get_yscale() == "log"
  negative = curve_frame({"all": (s, np.linspace(-5.0, 500.0, 100), 0.0)}, keys=())
  assert plots.plot_curves(negative).axes[0].get_yscale() == "linear"


def test_curves_single_group_has_no_legend_and_sparse_curves_get_dots():
  frame = curve_frame({"all": ([100, 200, 300], [0.5, 0.6, 0.7], 0.05)}, keys=())
  fig = plots.plot_curves(frame, title="eval accuracy")
  (ax,) = fig.axes
  assert ax.get_legend() is None and ax.get_title() == "eval accuracy"
  dots = [c for c in ax.collections if not isinstance(c, PolyCollection | LineCollection)]
  (scatter,) = dots
  np.testing.assert_allclose(scatter.get_offsets(), [[100, 0.5], [200, 0.6], [300, 0.7]])


def test_many_groups_get_a_colourbar_of_their_key_and_draw_in_three_collections():
  lrs = np.geomspace(1e-4, 1e-1, 100)
  fig = plots.plot_curves(lr_curves(lrs, steps=100))
  ax, colorbar = fig.axes
  assert ax.get_legend() is None and not fig.legends
  assert colorbar.get_ylabel() == "optimizer.learning_rate"
  assert colorbar.get_yscale() == "log"  # the learning rates are log-spaced
  (bands,), (lines,) = collections(ax)
  assert len(bands.get_paths()) == len(lines.get_segments()) == 100
  # Colour follows the value: the first and last groups sit at the map's two ends.
  first, last = lines.get_colors()[[0, -1]]
  np.testing.assert_allclose(first, plots.SEQUENTIAL(0.0))
  np.testing.assert_allclose(last, plots.SEQUENTIAL(1.0))


def test_many_groups_without_a_numeric_key_say_they_are_unlabelled():
  s = np.arange(1, 11)
  frame = curve_frame({f"model.name=net{i}": (s, s + i, 0.5) for i in range(30)},
                      keys=("config.model.name",))
  fig = plots.plot_curves(frame)
  assert len(fig.axes) == 1 and fig.axes[0].get_legend() is None and not fig.legends
  assert [t.get_text() for t in fig.texts] == ["30 groups: too many to label"]
  # With two keys the colour shows the first numeric one, and the note says so.
  two = curve_frame({f"optimizer.learning_rate={lr:g}, loss.beta={b}": (s, s * lr + b, 0.5)
                     for lr in (0.01, 0.1, 1.0) for b in range(10)}, keys=(LR, BETA))
  fig = plots.plot_curves(two)
  assert fig.axes[1].get_ylabel() == "optimizer.learning_rate"
  assert [t.get_text() for t in fig.texts] == [
      "30 groups of optimizer.learning_rate, loss.beta; colour shows optimizer.learning_rate"]


def test_a_legend_beside_the_axes_widens_the_figure_not_the_axes():
  few, more = plots.plot_curves(lr_curves([1, 2])), plots.plot_curves(lr_curves(range(1, 13)))
  assert few.axes[0].get_legend() is not None and not few.legends
  (legend,) = more.legends
  assert len(legend.get_texts()) == 12
  width = lambda fig: fig.axes[0].get_position().width * fig.get_size_inches()[0]
  assert more.get_size_inches()[0] > few.get_size_inches()[0]
  assert width(more) == pytest.approx(width(few))
  # Everything lies inside the figure: nothing of the legend is cut off.
  more.canvas.draw()
  box = legend.get_window_extent()
  assert box.x1 <= more.bbox.x1 and box.y0 >= 0


def test_curves_reject_a_frame_without_the_band_columns():
  frame = lr_curves([1]).drop(columns=["low"])
  with pytest.raises(ValueError, match=r"missing column\(s\) low.*curve_stats"):
    plots.plot_curves(frame)
  with pytest.raises(ValueError, match="no rows"):
    plots.plot_curves(lr_curves([1]).iloc[:0])


def test_save_png_writes_a_valid_png(tmp_path):
  path = save_png(plots.plot_curves(lr_curves([1, 2, 3])), str(tmp_path / "curves.png"))
  assert os.path.getsize(path) > 1000
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  image = imread(path)
  assert image.shape[0] == round(plots.SINGLE_SIZE[1] * plots.DPI) and image.shape[2] in (3, 4)


# --- plot_vs_param -------------------------------------------------------------------------------

@pytest.mark.parametrize("values, log", [
    ([1e-4, 3e-4, 1e-3, 3e-3, 1e-2], True),
    ([0.001, 0.01, 0.1], True),
    ([1, 2, 4, 8, 16, 32], True),
    ([1e-3, 1e-1], True),
    ([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], False),  # even steps: linear
    ([0.1, 1, 2, 3, 4, 5], False),
    ([1, 2, 4], False),  # a constant ratio but under a factor of 10
    ([0, 0.001, 0.01, 0.1], False),  # zero has no place on a log axis
    ([-0.1, 0.01, 1], False),
])
def test_vs_param_log_x_for_log_spaced_values_only(values, log):
  summary = summary_frame([(v, 1.0 + i, 0.1, 4) for i, v in enumerate(values)], keys=(LR,))
  ax = plots.plot_vs_param(summary, LR).axes[0]
  assert ax.get_xscale() == ("log" if log else "linear")


def test_vs_param_one_line_per_value_of_the_other_keys_with_the_intervals_given():
  rows = [(lr, beta, 1.0 + lr * beta, 0.1 * beta, 4) for beta in (2.0, 1.0)
          for lr in (1e-2, 1e-4, 1e-3)]
  summary = summary_frame(rows)
  ax = plots.plot_vs_param(summary, "optimizer.learning_rate").axes[0]  # the prefix is optional
  assert len(ax.containers) == 2
  assert ax.get_xlabel() == "optimizer.learning_rate" and ax.get_xscale() == "log"
  assert ax.get_ylabel() == "mean of final eval/loss (lower is better)"
  for container, beta in zip(ax.containers, (1.0, 2.0), strict=True):  # betas in value order
    line, _, (bars,) = container
    x, y = line.get_data()
    np.testing.assert_allclose(x, [1e-4, 1e-3, 1e-2])  # sorted by x
    np.testing.assert_allclose(y, 1.0 + x * beta)
    spans = np.array([seg[:, 1] for seg in bars.get_segments()])
    np.testing.assert_allclose(spans, np.stack([y - 0.1 * beta, y + 0.1 * beta], axis=1))
  legend = ax.get_legend()
  assert legend.get_title().get_text() == "loss.beta"
  assert [t.get_text() for t in legend.get_texts()] == ["1", "2"]


def test_vs_param_strings_are_categories_and_one_run_has_a_bare_point():
  summary = summary_frame([("sgd", 0.5, np.nan, 1), ("adam", 0.3, 0.05, 4)],
                          keys=("config.optimizer.name",))
  summary.loc[0, ["ci_low", "ci_high"]] = np.nan  # a group of one run has no interval
  ax = plots.plot_vs_param(summary, "optimizer.name").axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["adam", "sgd"]
  ((line, _, (bars,)),) = ax.containers
  np.testing.assert_allclose(line.get_data()[1], [0.3, 0.5])
  np.testing.assert_allclose(bars.get_segments()[1][:, 1], [0.5, 0.5])
  assert ax.get_legend() is None


def test_vs_param_unknown_column_names_it_and_lists_the_keys():
  summary = summary_frame([(1e-3, 1.0, 0.5, 0.1, 4)])
  with pytest.raises(ValueError, match=r"'optimizer.lr'.*valid: optimizer.learning_rate, "
                                       r"loss.beta"):
    plots.plot_vs_param(summary, "optimizer.lr")
  with pytest.raises(ValueError, match="missing column"):
    plots.plot_vs_param(summary.drop(columns=["ci_high"]), LR)


# --- plot_heatmap --------------------------------------------------------------------------------

def heat_summary(higher=False):
  # lr x beta with the (lr=1e-2, beta=2) cell missing; n differs per cell.
  rows = [(1e-3, 1.0, 0.5, 0.1, 4), (1e-2, 1.0, 0.25, 0.1, 3), (1e-3, 2.0, 0.75, 0.1, 2)]
  return summary_frame(rows, higher=higher)


def test_heatmap_cells_hold_the_means_and_counts_and_the_missing_cell_is_blank():
  fig = plots.plot_heatmap(heat_summary(), "optimizer.learning_rate", BETA)
  ax = fig.axes[0]
  grid = ax.images[0].get_array()  # (beta, lr), lowest values at the bottom left
  np.testing.assert_allclose(grid[~grid.mask], [0.5, 0.25, 0.75])
  assert grid.mask.tolist() == [[False, False], [False, True]]
  cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text()
           for t in ax.texts}
  assert cells == {(0, 0): "0.5\nn=4", (1, 0): "0.25\nn=3", (0, 1): "0.75\nn=2"}
  assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01"]
  assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]
  assert ax.get_xlabel() == "optimizer.learning_rate" and ax.get_ylabel() == "loss.beta"


def test_heatmap_better_is_brighter():
  lower = plots.plot_heatmap(heat_summary(higher=False), LR, BETA).axes[0].images[0]
  higher = plots.plot_heatmap(heat_summary(higher=True), LR, BETA).axes[0].images[0]
  brightness = lambda image, v: np.dot(image.cmap(image.norm(v))[:3], [0.299, 0.587, 0.114])
  assert brightness(lower, 0.25) > brightness(lower, 0.75)  # the lowest loss is brightest
  assert brightness(higher, 0.75) > brightness(higher, 0.25)


def test_heatmap_bad_inputs_name_the_problem():
  summary = heat_summary()
  with pytest.raises(ValueError, match=r"unknown y column 'beta'.*loss.beta"):
    plots.plot_heatmap(summary, LR, "beta")
  with pytest.raises(ValueError, match="both"):
    plots.plot_heatmap(summary, LR, LR)
  with pytest.raises(ValueError, match=r"value column 'group'.*valid: .*mean"):
    plots.plot_heatmap(summary, LR, BETA, value="group")
  three = summary_frame([(1e-3, 1.0, "a", 0.5, 0.1, 4), (1e-3, 1.0, "b", 0.6, 0.1, 4)],
                        keys=(LR, BETA, "config.model.name"))
  with pytest.raises(ValueError, match=r"several rows.*model.name"):
    plots.plot_heatmap(three, LR, BETA)


# --- plot_diagnostic -----------------------------------------------------------------------------

def test_panels_share_colours_and_one_legend_across_keys():
  s = np.arange(1, 6) * 100
  by_key = {key: curve_frame({"optimizer.learning_rate=0.1": (s, s * scale, 1.0),
                              "optimizer.learning_rate=0.01": (s, s * scale / 2, 1.0)})
            for key, scale in (("grad_norm", 1.0), ("param_norm", 3.0))}
  fig = plots._panels(by_key, title="diagnostic: weight_stats")
  assert [ax.get_title() for ax in fig.axes] == ["grad_norm", "param_norm"]
  colours = [collections(ax)[1][0].get_colors().tolist() for ax in fig.axes]
  assert colours[0] == colours[1]
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == ["0.01", "0.1"]


def diagnostic_tables():
  """load_runs/load_metrics-shaped frames: 2 learning rates x 2 seeds, weight_stats logged at
  three steps (two top-level keys and a per-layer one) and one other metric."""
  runs, rows = [], []
  for i, (lr, seed) in enumerate([(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]):
    run = f"/runs/sweep/lr={lr:g},seed={seed}"
    runs.append({"run": run, "name": run[len("/runs/sweep/"):], "status": "completed",
                 "seed": seed, LR: lr, "config.seed": seed})
    for step in (100, 200, 300):
      for key, value in (("grad_norm", lr * step + seed), ("param_norm", 10.0 + i),
                         ("dense_0/kernel/grad_norm", 1.0)):
        rows.append((run, step, f"diag/weight_stats/{key}", value, 0.0))
      rows.append((run, step, "train/loss", 1.0 / step, 0.0))
  metrics = pd.DataFrame(rows, columns=["run", "step", "name", "value", "wall_time"])
  metrics["run"] = metrics["run"].astype("category")
  metrics["name"] = metrics["name"].astype("category")
  return metrics, pd.DataFrame(runs)


def test_diagnostic_plots_top_level_keys_with_bands_over_seeds():
  metrics, runs = diagnostic_tables()
  fig = plots.plot_diagnostic(metrics, runs, "weight_stats", by="optimizer.learning_rate")
  assert [ax.get_title() for ax in fig.axes] == ["grad_norm", "param_norm"]
  (bands,), (lines,) = collections(fig.axes[0])
  assert len(lines.get_segments()) == len(bands.get_paths()) == 2
  # lr=0.001's mean grad norm over seeds 0 and 1: 0.001 * step + 0.5.
  np.testing.assert_allclose(lines.get_segments()[0],
                             [[100, 0.6], [200, 0.7], [300, 0.8]])
  (legend,) = fig.legends
  assert legend.get_title().get_text() == "optimizer.learning_rate"
  chosen = plots.plot_diagnostic(metrics, runs, "weight_stats", keys=["dense_0/kernel/grad_norm"],
                                 by="optimizer.learning_rate")
  assert [ax.get_title() for ax in chosen.axes] == ["dense_0/kernel/grad_norm"]


def test_diagnostic_bad_names_list_the_valid_ones():
  metrics, runs = diagnostic_tables()
  with pytest.raises(ValueError, match=r"'latent_space'.*diagnostics with scalars: weight_stats"):
    plots.plot_diagnostic(metrics, runs, "latent_space")
  with pytest.raises(ValueError, match=r"'norm'.*valid: grad_norm, param_norm, dense_0"):
    plots.plot_diagnostic(metrics, runs, "weight_stats", keys=["norm"])


def test_plotting_leaves_pyplot_alone():
  # In a fresh process: other tests may import pyplot themselves.
  code = (
      "import sys\n"
      "import numpy as np, pandas as pd\n"
      "from gmf_jax.analysis import plots\n"
      "frame = pd.DataFrame({'group': 'all', 'step': [1, 2], 'n': 2, 'mean': [1.0, 2.0],\n"
      "                      'low': [0.5, 1.5], 'high': [1.5, 2.5]})\n"
      "plots.plot_curves(frame).canvas.draw()\n"
      "assert 'matplotlib.pyplot' not in sys.modules\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                 env={**os.environ, "MPLBACKEND": "TkAgg"})

"""PNG plots of metrics.csv: which files, which panels, and the awkward inputs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from gmf_jax.runlog import plots
from gmf_jax.runlog.writers import METRICS_COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_csv(path, rows) -> str:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(METRICS_COLUMNS)
    writer.writerows((step, name, value, 0.0) for step, name, value in rows)
  return str(path)


def training_rows():
  rows = []
  for step in range(1, 201):
    loss = 500.0 * np.exp(-step / 20) + 0.1  # spans > 2 decades: log scale
    rows += [(step, "train/loss", loss), (step, "train/nelbo", loss + 1),
             (step, "train/learning_rate", 1e-3 * step / 200)]
    if step % 50 == 0:
      rows += [(step, "eval/loss", loss * 1.1), (step, "eval/nelbo", loss + 2),
               (step, "eval/accuracy", step / 200)]
  rows += [(200, "eval/kl", 3.0), (200, "train/kl", "nan"), (100, "train/loss", "inf")]
  return rows


@pytest.fixture
def metrics_csv(tmp_path):
  return write_csv(tmp_path / "metrics.csv", training_rows())


def test_writes_valid_pngs(metrics_csv, tmp_path):
  out = tmp_path / "plots"
  paths = plots.plot_metrics(metrics_csv, str(out))
  assert [os.path.basename(p) for p in paths] == ["metrics.png", "loss.png", "learning_rate.png"]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_one_panel_per_base_metric(metrics_csv):
  fig = plots.make_metrics_figure(plots.read_metrics(metrics_csv))
  titles = [ax.get_title() for ax in fig.axes]
  assert titles == ["loss", "nelbo", "learning_rate", "accuracy", "kl"]
  panels = dict(zip(titles, fig.axes, strict=True))
  labels = [line.get_label() for line in panels["loss"].get_lines()]
  assert labels == ["train", "eval"]
  assert panels["loss"].get_yscale() == "log"
  assert panels["accuracy"].get_yscale() == "linear"
  (single,) = panels["kl"].get_lines()  # train/kl was only NaN
  assert single.get_marker() == "o"


def test_read_metrics_skips_non_finite_and_keeps_the_last_row_per_step(tmp_path):
  path = write_csv(tmp_path / "metrics.csv", [
      (1, "train/loss", 3.0), (2, "train/loss", "nan"), (3, "train/loss", "-inf"),
      (2, "train/loss", 2.5), (4, "train/loss", 1.0), (3, "train/loss", 2.0),
  ])
  (curve,) = plots.read_metrics(path).values()
  np.testing.assert_array_equal(curve.steps, [1, 2, 3, 4])
  np.testing.assert_array_equal(curve.values, [3.0, 2.5, 2.0, 1.0])


def test_split_name():
  assert plots.split_name("train/loss") == ("train", "loss")
  assert plots.split_name("eval/kl/layer1") == ("eval", "kl/layer1")
  assert plots.split_name("epoch") == ("", "epoch")


def test_empty_csv_writes_nothing(tmp_path):
  header_only = write_csv(tmp_path / "metrics.csv", [])
  assert plots.plot_metrics(header_only, str(tmp_path / "plots")) == []
  assert not (tmp_path / "plots").exists()
  blank = tmp_path / "blank.csv"
  blank.write_text("")
  assert plots.plot_metrics(str(blank), str(tmp_path / "plots")) == []


def test_figures_for_absent_metrics_are_skipped(tmp_path):
  path = write_csv(tmp_path / "metrics.csv", [(1, "eval/accuracy", 0.5), (2, "eval/accuracy", 0.7)])
  paths = plots.plot_metrics(path, str(tmp_path / "plots"))
  assert [os.path.basename(p) for p in paths] == ["metrics.png"]


def test_plotting_leaves_pyplot_alone(metrics_csv, tmp_path):
  # In a fresh process: other tests may import pyplot themselves.
  code = (
      "import sys\n"
      "from gmf_jax.runlog.plots import plot_metrics\n"
      f"assert plot_metrics({metrics_csv!r}, {str(tmp_path / 'p')!r})\n"
      "assert 'matplotlib.pyplot' not in sys.modules\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                 env={**os.environ, "MPLBACKEND": "TkAgg"})


def test_diagnostic_scalars_get_their_own_figure_only_when_they_form_a_curve(tmp_path):
  plain = plots.plot_metrics(write_csv(tmp_path / "plain.csv", training_rows()),
                             str(tmp_path / "plain"))
  rows = training_rows() + [(200, "diag/latent_space/active_dims", 7.0)]
  once = plots.plot_metrics(write_csv(tmp_path / "once.csv", rows), str(tmp_path / "once"))
  assert "diagnostics.png" not in [os.path.basename(p) for p in once]
  assert imread(once[0]).shape == imread(plain[0]).shape  # metrics.png: no extra panel
  rows += [(100, "diag/latent_space/active_dims", 5.0), (100, "diag/jacobian/rank", 3.0),
           (200, "diag/jacobian/rank", 4.0), (100, "diag/weight_stats/dense/kernel/norm", 1.0),
           (200, "diag/weight_stats/dense/kernel/norm", 2.0)]
  twice = plots.plot_metrics(write_csv(tmp_path / "twice.csv", rows), str(tmp_path / "twice"))
  assert os.path.basename(twice[-1]) == "diagnostics.png"
  # Two panels (latent_space/active_dims, jacobian/rank), not the per-layer weight_stats key.
  assert imread(twice[-1]).shape[1] == round(2 * plots.PANEL_SIZE[0] * plots.DPI)

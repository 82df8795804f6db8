"""`python -m gmf_jax.plot`: a run's figures drawn again from its files, and a population's
figures (every member's curves in one figure, each group's mean bold) drawn once for all."""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np
import pytest

from gmf_jax import load_config
from gmf_jax.analysis import load_metrics, load_runs
from gmf_jax.analysis import plots as analysis_plots
from gmf_jax.plot import plot_folder, plot_run
from gmf_jax.runlog.writers import METRICS_COLUMNS
from tests.conftest import CONFIGS, run_cli

MLP = str(CONFIGS / "mlp.py")
PNG = b"\x89PNG\r\n\x1a\n"
# The full MLP config (confusion_matrix at the end, weight_stats on a schedule), a few steps.
TINY = {"num_steps": 60, "steps_per_call": 20, "log_every_steps": 10, "eval_every_steps": 30,
        "progress_bar": False, "checkpoint.every_steps": 30,
        "diagnostics.weight_stats.every_steps": 30}


def _pngs(folder) -> set[str]:
  """The PNGs under a run folder, relative to it."""
  return {os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder)
          for f in files if f.endswith(".png")}


def _collection(ax, gid: str):
  (found,) = [c for c in ax.collections if c.get_gid() == gid]
  return found


# --- a population of fake runs: files only, no training --------------------------------------

LRS = (0.01, 0.1)
SEEDS = (0, 1, 2)


def _write_run(folder, config: dict, rows) -> str:
  os.makedirs(folder)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(folder, "metadata.json"), "w") as f:
    json.dump({"status": "completed", "seed": config["seed"]}, f)
  with open(os.path.join(folder, "metrics.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(METRICS_COLUMNS)
    writer.writerows((step, name, value, 0.0) for step, name, value in rows)
  return str(folder)


@pytest.fixture
def population(tmp_path):
  """A folder of 6 runs: 2 learning rates x 3 seeds, with train, eval and diagnostic rows."""
  root = tmp_path / "pop"
  for lr in LRS:
    for seed in SEEDS:
      rows = []
      for step in range(10, 101, 10):
        rows += [(step, "train/loss", 1.0 / step + lr + 0.01 * seed),
                 (step, "train/learning_rate", lr)]
      rows += [(50, "eval/loss", lr + seed), (100, "eval/loss", lr + seed / 2),
               (50, "diag/mine/score", seed), (100, "diag/mine/score", seed + lr),
               (100, "diag/mine/layer_0/norm", 1.0),  # per-layer: not a summary panel
               (100, "diag/once/value", lr * seed),  # logged at one step only
               (100, "train/kl", "nan")]  # diverged everywhere: nothing to draw
      _write_run(root / f"lr={lr},seed={seed}",
                 {"seed": seed, "name": f"r{seed}", "optimizer": {"learning_rate": lr}}, rows)
  return root


def test_population_figure_has_every_member_and_a_mean_per_group(population):
  runs = load_runs(population)
  figures = {f.file: f.figure for f in analysis_plots.population_figures(load_metrics(runs),
                                                                         runs)}
  # One figure per family, never one per member.
  assert sorted(figures) == ["diag_mine.png", "diag_once.png", "metrics.png"]
  fig = figures["metrics.png"]
  assert [ax.get_title() for ax in fig.axes] == ["train/loss", "eval/loss",
                                                 "train/learning_rate"]
  for ax in fig.axes:
    assert len(_collection(ax, "runs").get_segments()) == len(LRS) * len(SEEDS)
    assert len(_collection(ax, "means").get_segments()) == len(LRS)
  # Each group's bold line is the mean of its members at every step.
  means = _collection(fig.axes[0], "means").get_segments()
  steps = np.arange(10, 101, 10)
  for mean, lr in zip(means, LRS, strict=True):
    want = 1.0 / steps + lr + 0.01 * np.mean(SEEDS)
    np.testing.assert_allclose(mean, np.column_stack([steps, want]))
  # The legend has an entry per group (the swept key's values), none per member or seed.
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == ["0.01", "0.1"]
  assert legend.get_title().get_text() == "optimizer.learning_rate"
  # A diagnostic's figure: its top-level scalars only; one logged once is a strip per group.
  assert [ax.get_title() for ax in figures["diag_mine.png"].axes] == ["diag/mine/score"]
  (strip,) = figures["diag_once.png"].axes
  assert len(_collection(strip, "runs").get_segments()) == len(LRS) * len(SEEDS)
  assert len(_collection(strip, "means").get_segments()) == len(LRS)


def test_plot_folder_writes_the_population_figures_in_its_plots_folder(population):
  written = plot_folder(population)
  assert sorted(os.path.relpath(p, population) for p in written) == [
      "plots/diag_mine.png", "plots/diag_once.png", "plots/metrics.png"]
  for path in written:
    with open(path, "rb") as f:
      assert f.read(8) == PNG
  assert not any(_pngs(population / name) for name in os.listdir(population) if "seed" in name)
  # --members draws each member's own figures too.
  members = plot_folder(population, members=True)
  assert len([p for p in members if p.endswith(os.path.join("plots", "metrics.png"))]) == 7


def test_groups_follow_by(population):
  runs = load_runs(population)
  fig = analysis_plots.plot_members(load_metrics(runs), runs, ["train/loss"], by="seed")
  (ax,) = fig.axes
  assert len(_collection(ax, "means").get_segments()) == len(SEEDS)
  with pytest.raises(ValueError, match="not a config key"):
    plot_folder(population, by="optimizer.nope")


def test_a_user_diagnostic_is_skipped_with_a_note_and_never_imported(tmp_path, caplog):
  marker = tmp_path / "imported"
  user_file = tmp_path / "my_diag.py"
  user_file.write_text(f"open({str(marker)!r}, 'w').write('x')\ndef make(exp):\n  pass\n")
  run = _write_run(tmp_path / "run", {
      "seed": 0, "diagnostics": {"mine": {"fn": f"{user_file}:make", "every_steps": 5},
                                 "other": {"fn": "not_a_builtin"}}},
      [(5, "train/loss", 1.0), (10, "train/loss", 0.5), (5, "diag/mine/x", 1.0)])
  for name in ("mine", "other"):
    os.makedirs(os.path.join(run, "diagnostics", name))
    for step in (5, 10):
      np.savez(os.path.join(run, "diagnostics", name, f"step_{step}.npz"), a=np.zeros(3))
  with caplog.at_level(logging.INFO, logger="gmf_jax"):
    written = plot_run(run)
  assert {os.path.relpath(p, run) for p in written} == {
      "plots/metrics.png", "plots/loss.png"}
  assert not marker.exists()
  notes = [r.getMessage() for r in caplog.records]
  assert sum("'mine'" in n for n in notes) == 1 and sum("'other'" in n for n in notes) == 1


def test_a_bad_path_is_one_error_line_and_exit_2(tmp_path):
  (tmp_path / "empty").mkdir()
  for path in (tmp_path / "missing", tmp_path / "empty"):
    done = run_cli(str(path), cwd=tmp_path, module="gmf_jax.plot")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
  done = run_cli("--nope", str(tmp_path), cwd=tmp_path, module="gmf_jax.plot")
  assert done.returncode == 2 and done.stderr.count("\n") == 1
  done = run_cli("-h", cwd=tmp_path, module="gmf_jax.plot")
  assert done.returncode == 0 and "usage: python -m gmf_jax.plot" in done.stdout


def test_a_failure_to_draw_is_a_warning_not_a_failed_sweep(tmp_path, monkeypatch, caplog):
  from gmf_jax import plot
  from gmf_jax.sweep.run import draw_population_figures

  def broken(path, **kwargs):
    raise RuntimeError("no fonts")

  monkeypatch.setattr(plot, "plot_population", broken)
  with caplog.at_level(logging.WARNING, logger="gmf_jax"):
    assert draw_population_figures(str(tmp_path)) == []
  assert "population figures were not drawn (RuntimeError: no fonts)" in caplog.text


# --- real runs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
  from gmf_jax.train.loop import train_and_evaluate

  folder = tmp_path_factory.mktemp("single") / "run"
  train_and_evaluate(load_config(MLP, TINY), str(folder))
  return folder


def test_plot_redraws_a_runs_figures_with_the_names_it_wrote(single_run):
  wrote = _pngs(single_run)
  assert {"plots/metrics.png", "plots/loss.png",
          "diagnostics/confusion_matrix/step_60_matrix.png"} <= wrote
  for name in wrote:
    os.remove(single_run / name)
  # A copy of the config file in the folder is the run's code: plotting never runs it.
  (single_run / "config.py").write_text("raise SystemExit('executed')\n")
  done = run_cli(str(single_run), cwd=single_run.parent, module="gmf_jax.plot")
  assert done.returncode == 0, done.stderr
  assert _pngs(single_run) == wrote
  for name in wrote:
    assert (single_run / name).read_bytes()[:8] == PNG


def test_a_seed_ensemble_draws_population_figures_beside_its_members(tmp_path):
  from gmf_jax.sweep import run_sweep, seed_ensemble

  ens = tmp_path / "ens"
  result = run_sweep(seed_ensemble(MLP, 2, TINY), str(ens))
  assert result.counts() == {"completed": 2}
  assert _pngs(ens / "plots") == {"metrics.png", "diag_weight_stats.png",
                                  "diag_confusion_matrix.png"}
  runs = load_runs(ens)
  fig = analysis_plots.population_figures(load_metrics(runs), runs)[0].figure
  assert fig.axes[0].get_title() == "train/loss" and not fig.legends  # one group: the seeds
  assert len(_collection(fig.axes[0], "runs").get_segments()) == 2
  assert len(_collection(fig.axes[0], "means").get_segments()) == 1
  # A member's own figures, drawn from its folder.
  member = ens / "seed=1"
  for name in _pngs(member):
    os.remove(member / name)
  written = plot_folder(member)
  assert {"plots/metrics.png", "diagnostics/confusion_matrix/step_60_matrix.png"} <= {
      os.path.relpath(p, member) for p in written}

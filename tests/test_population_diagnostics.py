"""Diagnostics across members (cka, mode_connectivity, ensemble) and `analysis.linear_cka`."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import gmf_jax
from gmf_jax import ConfigError
from gmf_jax.analysis import linear_cka
from tests.conftest import CONFIGS, run_cli

MLP = str(CONFIGS / "mlp.py") + ":smoke"
VAE = str(CONFIGS / "vae.py") + ":smoke"
ACROSS = ("cka", "mode_connectivity", "ensemble")
SHORT = {"num_steps": 40, "progress_bar": False}


def _with_diagnostics(path: str, overrides: dict, **entries):
  config = gmf_jax.load_config(path, overrides)
  with config.diagnostics.unlocked():
    for name, entry in entries.items():
      config.diagnostics[name] = entry
  return config


def _formula(x, y):
  x, y = x - x.mean(0), y - y.mean(0)
  return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_linear_cka_is_the_formula_and_keeps_its_invariances():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(50, 8)), rng.normal(size=(50, 5))
  y[:, 0] += 2 * x[:, 1]  # something shared
  assert linear_cka(x, y) == pytest.approx(_formula(x, y), rel=1e-12)
  assert 0 < linear_cka(x, y) < 1
  assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
  q, _ = np.linalg.qr(rng.normal(size=(8, 8)))  # orthogonal
  assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
  assert linear_cka(x, 3.5 * y) == pytest.approx(linear_cka(x, y), rel=1e-10)
  assert linear_cka(x + 7.0, y) == pytest.approx(linear_cka(x, y), rel=1e-10)  # centred


@pytest.mark.parametrize("x, y, message", [
    (np.ones((5, 2, 2)), np.ones((5, 2)), "examples, features"),
    (np.ones((5, 2)), np.ones((4, 2)), "same examples"),
    (np.ones((5, 2)), np.arange(10.0).reshape(5, 2), "constant"),
])
def test_linear_cka_refuses_what_it_cannot_compare(x, y, message):
  with pytest.raises(ValueError, match=message):
    linear_cka(x, y)


def test_pairs_are_all_pairs_up_to_the_cap_then_each_member_with_the_first():
  from gmf_jax.diagnostics.population import pair_indices

  assert pair_indices(3, 28).tolist() == [[0, 1], [0, 2], [1, 2]]
  assert pair_indices(4, 5).tolist() == [[0, 1], [0, 2], [0, 3]]


@pytest.fixture(scope="module")
def population():
  """A 3-member MLP population's state (members 0 and 1 identical, member 2 other weights), its
  experiment and probe."""
  import jax

  from gmf_jax.diagnostics import runner
  from gmf_jax.train.build import build_experiment, init_population
  from gmf_jax.train.loop import _stack
  from gmf_jax.train.step import make_keys

  config = _with_diagnostics(MLP, SHORT, cka={}, mode_connectivity=dict(points=5),
                             ensemble=dict(bins=10))
  exp = build_experiment(config, population=3)
  keys = _stack([make_keys(s) for s in (0, 0, 1)])
  state = init_population(exp, keys, _stack([exp.hparams] * 3))
  probe = runner.probe_batch(exp, 64)
  return exp, jax.device_get(state), probe, keys


def _computed(exp, state, probe, name):
  import jax

  (d,) = [d for d in exp.diagnostics if d.name == name]
  scalars, arrays = jax.jit(d.diagnostic.compute)(state, probe, jax.random.PRNGKey(0))
  return jax.device_get(scalars), jax.device_get(arrays)


def test_cka_of_every_pair_is_linear_cka_of_the_layer_outputs(population):
  import jax

  from gmf_jax.diagnostics.population import _layer_outputs
  from gmf_jax.members import member

  exp, state, probe, _ = population
  scalars, arrays = _computed(exp, state, probe, "cka")
  pairs, within = arrays["pairs"], arrays["layers_within"]
  outputs = [jax.device_get(_layer_outputs(exp.model.apply, member(state, m).params, {},
                                           probe["x"], jax.random.PRNGKey(0)))
             for m in range(3)]
  layers = list(outputs[0])
  assert pairs.shape == (3, 3, len(layers)) and within.shape == (3, len(layers), len(layers))
  for i in range(3):
    for j in range(3):
      for k, layer in enumerate(layers):
        assert pairs[i, j, k] == pytest.approx(linear_cka(outputs[i][layer],
                                                          outputs[j][layer]), abs=2e-5)
    for k, a in enumerate(layers):
      for m, b in enumerate(layers):
        assert within[i, k, m] == pytest.approx(linear_cka(outputs[i][a], outputs[i][b]),
                                                abs=2e-5)
  np.testing.assert_allclose(pairs[0, 1], 1.0, atol=1e-5)  # identical members
  assert list(scalars) == [f"{layer}/mean_across_members" for layer in layers]
  off = [pairs[i, j, 0] for i in range(3) for j in range(3) if i != j]
  assert scalars[f"{layers[0]}/mean_across_members"] == pytest.approx(np.mean(off), abs=1e-6)


def test_the_barrier_of_a_member_with_itself_is_zero(population):
  exp, state, probe, _ = population
  scalars, arrays = _computed(exp, state, probe, "mode_connectivity")
  pairs = arrays["pairs"].tolist()
  assert pairs == [[0, 1], [0, 2], [1, 2]]
  assert arrays["alphas"].tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])
  assert arrays["barrier"][0] == 0.0  # members 0 and 1 are the same weights
  assert np.ptp(arrays["loss"][0]) == 0.0  # every point of that line is that member
  loss = arrays["loss"]
  np.testing.assert_allclose(arrays["barrier"], loss.max(1) - (loss[:, 0] + loss[:, -1]) / 2,
                             rtol=1e-6)
  assert "accuracy" in arrays and arrays["accuracy"].shape == (3, 5)
  assert scalars["max_barrier"] == pytest.approx(arrays["barrier"].max())


def test_ensemble_numbers_are_those_of_its_saved_predictions(population):
  from gmf_jax.diagnostics.population import calibration_error

  exp, state, probe, _ = population
  scalars, arrays = _computed(exp, state, probe, "ensemble")
  probs, labels = arrays["probs"].astype(np.float64), arrays["labels"]
  assert probs.shape == (3, 64, 10)
  mean = probs.mean(0)
  assert scalars["ensemble_accuracy"] == pytest.approx(np.mean(mean.argmax(-1) == labels))
  assert scalars["ensemble_nll"] == pytest.approx(
      -np.mean(np.log(mean[np.arange(64), labels])), rel=1e-5)
  assert scalars["ensemble_ece"] == pytest.approx(calibration_error(mean, labels, 10), abs=1e-5)
  for m in range(3):
    assert arrays["member_ece"][m] == pytest.approx(calibration_error(probs[m], labels, 10),
                                                    abs=1e-5)
    assert arrays["member_accuracy"][m] == pytest.approx(np.mean(probs[m].argmax(-1) == labels))
  predicted = probs.argmax(-1)
  expect = np.mean(predicted[:, None] != predicted[None], -1)
  np.testing.assert_allclose(arrays["disagreement"], expect)
  assert expect[0, 1] == 0 and scalars["disagreement"] == pytest.approx(
      expect[~np.eye(3, dtype=bool)].mean())


def test_calibration_error_bins_by_confidence():
  from gmf_jax.diagnostics.population import calibration_error

  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
  labels = np.array([0, 1, 1, 0])
  # bins of 0.5 width: (0.5, 1] holds all four, confidence 0.6875, accuracy 0.75
  assert calibration_error(probs, labels, 2) == pytest.approx(abs(0.75 - 0.6875))
  # bins of 0.1: 0.9 right alone, 0.7 right alone; 0.6 wrong and 0.55 right share (0.5, 0.6]
  # (accuracy 0.5, confidence 0.575)
  expected = (abs(1 - 0.9) + abs(1 - 0.7) + 2 * abs(0.5 - 0.575)) / 4
  assert calibration_error(probs, labels, 10) == pytest.approx(expected)


def test_the_devices_calibration_error_is_the_numpy_one_over_many_bins():
  from gmf_jax.diagnostics.population import _calibration_error, calibration_error

  rng = np.random.default_rng(3)
  probs = rng.dirichlet(np.full(4, 0.3), size=400)  # confidences over the whole range
  labels = rng.integers(0, 4, size=400)
  for bins in (1, 5, 15):
    assert float(_calibration_error(probs.astype(np.float32), labels, bins)) == pytest.approx(
        calibration_error(probs.astype(np.float32), labels, bins), abs=1e-5)


def test_an_ensemble_writes_them_in_its_population_folder_and_a_backfill_the_same(in_tmp):
  (in_tmp / "mlp_pop.py").write_text(  # an ensemble reloads its members' config from the file
      "import runpy\n"
      f"base = runpy.run_path({str(CONFIGS / 'mlp.py')!r})['get_config']\n"
      "def get_config(arg=None):\n"
      "  c = base(arg)\n"
      + "".join(f"  c.diagnostics.{name} = dict(schedule='end')\n" for name in ACROSS)
      + "  return c\n")
  config = gmf_jax.load_config(str(in_tmp / "mlp_pop.py") + ":smoke", {**SHORT, "num_seeds": 3})
  gmf_jax.run(config, workdir="runs/ens")
  folder = in_tmp / "runs/ens/populations/p0"
  written = {name: dict(np.load(folder / "diagnostics" / name / "step_40.npz"))
             for name in ACROSS}
  assert (folder / "diagnostics/cka/step_40_pairs.png").exists()
  assert (folder / "diagnostics/mode_connectivity/step_40_line.png").exists()
  assert (folder / "diagnostics/ensemble/step_40_ensemble.png").exists()
  for member in ("seed=0", "seed=1", "seed=2"):  # nothing of theirs in the members' folders
    assert not (in_tmp / "runs/ens" / member / "diagnostics" / "cka").exists()
  with open(folder / "metrics.csv") as f:
    rows = [(r["step"], r["name"]) for r in csv.DictReader(f)]
  assert ("40", "diag/ensemble/ensemble_accuracy") in rows
  assert ("40", "diag/mode_connectivity/mean_barrier") in rows
  pairs = written["cka"]["pairs"]
  np.testing.assert_allclose(pairs, np.swapaxes(pairs, 0, 1), atol=1e-6)
  np.testing.assert_allclose(np.diagonal(pairs, axis1=0, axis2=1), 1.0, atol=1e-5)

  for name in ACROSS:  # the backfill writes them anew
    os.remove(folder / "diagnostics" / name / "step_40.npz")
  proc = run_cli("--workdir=runs/ens", "--diagnostics=" + ",".join(ACROSS), cwd=in_tmp,
                 module="gmf_jax.diagnose")
  assert proc.returncode == 0, proc.stderr
  assert "populations/p0 step 40: cka, mode_connectivity, ensemble" in proc.stdout
  for name in ACROSS:
    again = np.load(folder / "diagnostics" / name / "step_40.npz")
    assert sorted(again.files) == sorted(written[name])
    for key in again.files:
      np.testing.assert_array_equal(again[key], written[name][key], err_msg=f"{name}/{key}")
  with open(folder / "metrics.csv") as f:
    assert sorted((r["step"], r["name"]) for r in csv.DictReader(f)) == sorted(rows)  # once each

  proc = run_cli("--workdir=runs/ens/seed=1", "--diagnostics=cka", cwd=in_tmp,
                 module="gmf_jax.diagnose")
  assert proc.returncode == 2 and "pass the sweep's folder" in proc.stderr

  proc = run_cli("--workdir=runs/ens", "--diagnostics=nope", cwd=in_tmp,
                 module="gmf_jax.diagnose")
  assert proc.returncode == 2 and "'nope' is neither in this sweep's configs" in proc.stderr

  report = gmf_jax.analysis.write_report("runs/ens")  # the numbers and figures, where they ran
  text = open(report.markdown).read()
  assert "## Across members" in text and "### `populations/p0`: 3 members, step 40" in text
  barrier = float(written["mode_connectivity"]["barrier"].mean())
  assert f"| mode_connectivity/mean_barrier | {barrier:.4g} |" in text
  assert (in_tmp / "runs/ens/report/across_populations_p0_cka_step_40_pairs.png").exists()


def test_a_single_run_is_refused_them_before_anything_is_written(in_tmp):
  config = _with_diagnostics(MLP, SHORT, cka=dict(schedule="end"))
  with pytest.raises(ConfigError, match=r"diagnostics.cka compares the members of a "
                                        r"population; this is a single run"):
    gmf_jax.train_and_evaluate(config, workdir="runs/one")
  assert not (in_tmp / "runs").exists()
  proc = run_cli(f"--config={CONFIGS / 'mlp.py'}:smoke", "--config.diagnostics.ensemble="
                 "{'schedule': 'end'}", cwd=in_tmp)
  assert proc.returncode != 0


@pytest.mark.parametrize("path, entries, message", [
    (VAE, {"ensemble": {}}, r"diagnostics.ensemble needs a classifier"),
    (MLP, {"mode_connectivity": {"points": 1}}, r"mode_connectivity.points=1 must be an integer"),
    (MLP, {"mode_connectivity": {"max_pairs": 0}}, r"mode_connectivity.max_pairs=0 must be"),
    (MLP, {"ensemble": {"bins": 0}}, r"diagnostics.ensemble.bins=0 must be an integer"),
    (MLP, {"cka": {"layers": 2}}, r"diagnostics.cka"),
])
def test_bad_options_are_refused_at_build(path, entries, message):
  from gmf_jax.train.build import build_experiment

  config = _with_diagnostics(path, SHORT, **entries)
  with pytest.raises(ConfigError, match=message):
    build_experiment(config, population=2)


def test_the_backfill_command_refuses_steps_it_cannot_read(in_tmp):
  proc = run_cli("--workdir=runs/x", "--steps=ten", cwd=in_tmp, module="gmf_jax.diagnose")
  assert proc.returncode == 2
  assert "--steps=ten: give all, latest, or steps such as 2000,4000." in proc.stderr

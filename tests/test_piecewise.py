"""Piecewise-constant hyperparameters (`config.piecewise`): the values change at their steps,
in the one compiled program, and a resumed run takes the values of its step."""

from __future__ import annotations

import csv
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

import gmf_jax
from gmf_jax import ConfigError, Preempted, failpoints
from tests.conftest import CONFIGS

MLP = str(CONFIGS / "mlp.py") + ":smoke"
SHORT = {"num_steps": 40, "steps_per_call": 10, "eval_every_steps": 20, "log_every_steps": 10,
         "checkpoint.every_steps": 20, "schedule.name": "constant"}


def _config(pieces, **over):
  config = gmf_jax.load_config(MLP, {**SHORT, **over})
  with config.unlocked():
    for key, (steps, values) in pieces.items():
      section, leaf = key.split(".")
      config.piecewise[section] = {leaf: {"steps": steps, "values": values}}
  return config


def _rows(folder):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return sorted((int(r["step"]), r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith(("train/", "eval/", "hparams/")))


def _params(folder, step):
  state = ocp.StandardCheckpointer().restore(os.path.join(folder, "checkpoints", str(step),
                                                          "state"))
  return [np.asarray(x) for x in __import__("jax").tree_util.tree_leaves(state["params"])]


@pytest.fixture
def disarm():
  yield
  failpoints.arm(None)


def test_a_learning_rate_of_zero_from_step_20_freezes_the_weights(tmp_path):
  pieces = {"optimizer.learning_rate": ([20], [0.1, 0.0])}
  gmf_jax.train_and_evaluate(_config(pieces), str(tmp_path / "run"))
  before, after = _params(tmp_path / "run", 20), _params(tmp_path / "run", 40)
  for a, b in zip(before, after, strict=True):
    np.testing.assert_array_equal(a, b)
  rows = {(s, n): float(v) for s, n, v in _rows(tmp_path / "run")}
  assert [rows[(s, "hparams/optimizer.learning_rate")] for s in (10, 20, 30, 40)] == [
      pytest.approx(0.1), pytest.approx(0.1), 0.0, 0.0]
  assert rows[(30, "train/learning_rate")] == 0.0


def test_a_resumed_run_takes_the_values_of_its_step(tmp_path, disarm):
  pieces = {"optimizer.learning_rate": ([10, 30], [0.1, 0.02, 0.3]),
            "optimizer.momentum": ([20], [0.9, 0.5])}
  gmf_jax.train_and_evaluate(_config(pieces), str(tmp_path / "ref"))
  failpoints.arm("eval@1=SIGTERM")  # at step 20: saved there, between the two changes
  with pytest.raises(Preempted):
    gmf_jax.train_and_evaluate(_config(pieces), str(tmp_path / "cut"))
  failpoints.arm(None)
  gmf_jax.train_and_evaluate(_config(pieces), str(tmp_path / "cut"))
  assert _rows(tmp_path / "cut") == _rows(tmp_path / "ref")


@pytest.mark.parametrize("pieces, says", [
    ({"model.hidden": ([10], [32, 64])}, "'model.hidden' is not a data hyperparameter"),
    ({"optimizer.learning_rate": ([40], [0.1, 0.2])}, "steps=[40] must be increasing"),
    ({"optimizer.learning_rate": ([20, 10], [0.1, 0.2, 0.3])}, "steps=[20, 10]"),
    ({"optimizer.learning_rate": ([10], [0.1])}, "values must be 2 numbers"),
])
def test_bad_pieces_are_refused_before_anything_is_written(tmp_path, pieces, says):
  with pytest.raises(ConfigError) as info:
    gmf_jax.train_and_evaluate(_config(pieces), str(tmp_path / "run"))
  assert says in str(info.value), str(info.value)
  assert not (tmp_path / "run").exists()

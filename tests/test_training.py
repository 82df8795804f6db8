"""The Python API end to end, and the reproducibility properties of the fused loop."""

import csv
import json
import os

import numpy as np
import pytest

import gmf_jax
from gmf_jax import NonFiniteError
from tests.conftest import CONFIGS, tree_equal

MLP = str(CONFIGS / "mlp.py")
VAE = str(CONFIGS / "vae.py")


def _train(tmp_path, name, path=MLP, **overrides):
  config = gmf_jax.load_config(path + ":smoke", overrides)
  return gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / name))


API = dict(num_steps=200, eval_every_steps=100, steps_per_call=50, log_every_steps=50)


@pytest.fixture(scope="module")
def api_runs(tmp_path_factory):
  """One config trained three times: into a folder named here ("named"), again with no folder
  named, from another current folder ("default"), and with another seed ("seed1")."""
  root = tmp_path_factory.mktemp("api")
  runs = {"named": _train(root, "run", **API)}
  (root / "cwd").mkdir()
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(root / "cwd")
    runs["default"] = gmf_jax.train_and_evaluate(gmf_jax.load_config(MLP + ":smoke", API))
  runs["seed1"] = _train(root, "seed1", **API, seed=1)
  return root, runs


def test_python_api_returns_state_and_metrics(api_runs):
  root, runs = api_runs
  result = runs["named"]
  assert int(result.state.step) == 200
  assert result.workdir == str(root / "run")
  # Digits are easy: 200 SGD steps reach well above chance (10%).
  assert result.metrics["eval/accuracy"] > 0.7
  summary = json.loads((root / "run" / "summary.json").read_text())
  assert summary["metrics"]["eval/accuracy"]["final"] == result.metrics["eval/accuracy"]
  assert summary["num_train"] == 1437 and summary["num_test"] == 360


def test_default_runs_dir_is_under_cwd(api_runs):
  root, runs = api_runs
  assert runs["default"].workdir.startswith(str(root / "cwd" / "runs" / "mlp-"))


def test_same_seed_gives_bitwise_same_params(api_runs):
  _, runs = api_runs
  a, b, c = runs["named"], runs["default"], runs["seed1"]  # a and b: only the folder differs
  assert tree_equal(a.state.params, b.state.params)
  assert not tree_equal(a.state.params, c.state.params)
  assert a.metrics == b.metrics


# 150 steps cross several epochs of digits at batch 64 (22 steps per epoch), and the VAE draws a
# latent sample per step: batch order and keys must follow the step, not the chunk.
SPC = dict(num_steps=150, eval_every_steps=150, log_every_steps=10)


@pytest.fixture(scope="module")
def in_calls_of_100(tmp_path_factory):
  """`path` -> (its run of SPC in calls of 100 steps, the run's folder), each trained once: the
  steps_per_call test compares it with calls of 1, the streaming test (VAE) with host batches."""
  root, done = tmp_path_factory.mktemp("in_calls_of_100"), {}

  def get(path):
    if path not in done:
      folder = root / os.path.basename(path) / "hundred"
      done[path] = _train(folder.parent, "hundred", path, steps_per_call=100, **SPC), folder
    return done[path]

  return get


@pytest.mark.parametrize("path", [MLP, VAE])
def test_steps_per_call_does_not_change_the_result(tmp_path, path, in_calls_of_100):
  one = _train(tmp_path, "one", path, steps_per_call=1, **SPC)
  hundred, hundred_dir = in_calls_of_100(path)
  assert tree_equal(one.state.params, hundred.state.params)
  rows = lambda folder: [(r["step"], r["name"], r["value"])
                         for r in csv.DictReader(open(folder / "metrics.csv"))]
  assert rows(tmp_path / "one") == rows(hundred_dir)


def test_streaming_from_host_matches_device_batches(tmp_path, in_calls_of_100):
  # Two calls (100 steps, then 50) across several epochs: the host feed follows the step too.
  device, device_dir = in_calls_of_100(VAE)
  host = _train(tmp_path, "host", VAE, steps_per_call=100, **SPC, **{"data.on_device": "no"})
  assert json.loads((device_dir / "summary.json").read_text())["data_on_device"] is True
  summary = json.loads((tmp_path / "host" / "summary.json").read_text())
  assert summary["data_on_device"] is False
  for a, b in zip(jax_leaves(device.state.params), jax_leaves(host.state.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def jax_leaves(tree):
  import jax

  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_num_epochs_sets_num_steps(tmp_path):
  result = _train(tmp_path, "epochs", num_epochs=2, batch_size=100)
  assert int(result.state.step) == 2 * (1437 // 100)
  config = json.loads((tmp_path / "epochs" / "config.json").read_text())
  assert config["num_steps"] == 28


def test_log_steps_average_the_window(tmp_path):
  _train(tmp_path, "w", num_steps=30, steps_per_call=7, log_every_steps=4, eval_every_steps=30)
  rows = list(csv.DictReader(open(tmp_path / "w" / "metrics.csv")))
  steps = sorted({int(r["step"]) for r in rows if r["name"] == "train/loss"})
  assert steps == [4, 8, 12, 16, 20, 24, 28, 30]


@pytest.mark.parametrize("num_steps, steps_per_call, evaluated", [
    (25, 7, [10, 20, 25]),  # the end is not a multiple: evaluated there too
    (30, 4, [10, 20, 30]),  # the end is one: evaluated once
])
def test_evaluations_happen_at_multiples_of_eval_every_steps_and_at_the_end(
    tmp_path, num_steps, steps_per_call, evaluated):
  # Calls of 7 (or 4) steps do not divide 10: a call ends early at each evaluation step.
  _train(tmp_path, "e", num_steps=num_steps, steps_per_call=steps_per_call, log_every_steps=5,
         eval_every_steps=10)
  rows = list(csv.DictReader(open(tmp_path / "e" / "metrics.csv")))
  for name in ("eval/loss", "eval/accuracy"):
    assert [int(r["step"]) for r in rows if r["name"] == name] == evaluated, name
  summary = json.loads((tmp_path / "e" / "summary.json").read_text())
  assert summary["metrics"]["eval/loss"]["final_step"] == num_steps


def test_non_finite_loss_stops_with_the_step(tmp_path):
  with pytest.raises(NonFiniteError, match=r"non-finite .* at step \d+") as info:
    _train(tmp_path, "nan", num_steps=40, **{"optimizer.learning_rate": 1e30})
  summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
  metadata = json.loads((tmp_path / "nan" / "metadata.json").read_text())
  assert summary["status"] == metadata["status"] == "failed"
  assert "non-finite" in metadata["error"]
  # It diverged before the first checkpoint (every 5000 steps, and at the end): the message
  # says so instead of pointing at a checkpoint that does not exist.
  assert not list((tmp_path / "nan").glob("checkpoints/[0-9]*"))
  assert "no checkpoint was saved before it" in str(info.value)
  assert "holds finite values" not in str(info.value)


def test_vae_learns(tmp_path):
  result = _train(tmp_path, "vae", VAE, num_steps=400, steps_per_call=100, eval_every_steps=400)
  rows = list(csv.DictReader(open(tmp_path / "vae" / "metrics.csv")))
  losses = [float(r["value"]) for r in rows if r["name"] == "train/nelbo"]
  assert losses[-1] < 0.7 * losses[0]
  assert result.metrics["eval/nelbo"] < 30.0  # nats per 64 binary pixels; untrained ~44


def test_skip_mode_logs_the_learning_rate_actually_used(tmp_path):
  # One training example is NaN: each epoch, the step whose batch holds it is skipped, and a
  # skipped update does not advance the optimizer's schedule.
  (tmp_path / "nan_data.py").write_text(
      "import numpy as np\n"
      "from gmf_jax.data import ArraySplit, Dataset\n"
      "def load():\n"
      "  rng = np.random.default_rng(0)\n"
      "  x = rng.normal(size=(64, 2)).astype(np.float32)\n"
      "  x[5] = np.nan\n"
      "  y = (x[:, 0] > 0).astype(np.int32)\n"
      "  split = ArraySplit({'x': x, 'y': y})\n"
      "  test = ArraySplit({'x': x[6:], 'y': y[6:]})\n"
      "  return Dataset('nan_data', split, test, (2,), num_classes=2, kind='points')\n")
  overrides = {"data.name": f"{tmp_path / 'nan_data.py'}:load", "batch_size": 8,
               "num_steps": 40, "steps_per_call": 7, "log_every_steps": 1,
               "on_nonfinite": "skip", "schedule.name": "exponential",
               "schedule.decay_rate": 0.5, "schedule.transition_steps": 4}
  _train(tmp_path, "skip", **overrides)
  rows = list(csv.DictReader(open(tmp_path / "skip" / "metrics.csv")))
  series = lambda name: {int(r["step"]): float(r["value"]) for r in rows if r["name"] == name}
  skipped, rates = series("train/skipped"), series("train/learning_rate")
  assert sum(skipped.values()) == 5  # one step per epoch of 8 steps
  done = 0
  for step in range(1, 41):
    expected = 0.05 * 0.5 ** ((step - 1 - done) / 4)  # the rate at the optimizer's count
    assert rates[step] == pytest.approx(expected, rel=1e-6), step
    done += int(skipped[step])

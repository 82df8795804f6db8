"""The everyday trainer parts: model state (BatchNorm), augmentation inside the step, mixed
precision, gradient accumulation and averaged weights, through the real loop.

Tolerances: a vmapped member against its standalone run, `POP_RTOL` (XLA batches the
convolutions of a population differently; measured below 1e-5 here); bfloat16 and float16 runs
against float32, `LOW_PRECISION_RTOL` on the final eval loss; accumulation against one step on
the whole batch, 1e-5 relative on the parameters after several steps (float32 sums in another
order).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gmf_jax import ConfigError, load_config, train_and_evaluate
from gmf_jax.diagnose import diagnose
from gmf_jax.sweep import make_sweep, run_sweep
from gmf_jax.train.augment import Augment, random_crop
from gmf_jax.train.build import build_experiment, init_state
from gmf_jax.train.step import StepOptions, make_keys, train_step
from tests.conftest import CONFIGS, run_cli, tree_equal

CNN = str(CONFIGS / "cnn.py")
MLP = str(CONFIGS / "mlp.py")
POP_RTOL = 1e-4
LOW_PRECISION_RTOL = 0.05
SHORT = dict(num_steps=20, steps_per_call=10, log_every_steps=10, eval_every_steps=10,
             progress_bar=False)
N = SHORT["num_steps"]
SMALL_CNN = {"model.features": (8, 16), "model.dense": 32}  # compiles and runs faster
BN = {**SHORT, **SMALL_CNN, "model.norm": "batch"}
# Everything at once: BatchNorm, every built-in augmentation, float16 with loss scaling,
# accumulation and averaged weights evaluated beside the live ones.
ALL = {**BN, "data.augment.crop_padding": 1, "data.augment.flip": True,
       "data.augment.noise_std": 0.05, "precision.compute": "float16",
       "optimizer.accumulate_steps": 2, "ema.decay": 0.9, "ema.evaluate": "both"}


def _cli_args(overrides):
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def _rows(folder, prefixes=("train/", "eval/")):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return sorted((r["step"], r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith(prefixes))


def _final_state(workdir):
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  path = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
  return steps[-1], ocp.StandardCheckpointer().restore(path)


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("bn")
  config = load_config(CNN + ":smoke", BN)
  return root, train_and_evaluate(config, workdir=str(root / "run"))


@pytest.fixture(scope="module")
def all_run(tmp_path_factory):
  """Every part on, trained in this process: the reference a killed command-line run must
  reproduce bitwise."""
  root = tmp_path_factory.mktemp("all")
  config = load_config(CNN + ":smoke", {**ALL, "checkpoint.every_steps": 5})
  return root, train_and_evaluate(config, workdir=str(root / "ref"))


def test_batchnorm_statistics_train_and_are_saved(bn_run):
  root, result = bn_run
  stats = result.state.model_state["batch_stats"]
  exp = build_experiment(load_config(CNN + ":smoke", BN))
  initial = init_state(exp, make_keys(0)).model_state["batch_stats"]
  changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), stats, initial)
  assert all(jax.tree_util.tree_leaves(changed))  # every running mean and variance moved
  step, saved = _final_state(root / "run")
  assert step == N and tree_equal(saved["model_state"]["batch_stats"], stats)
  assert result.metrics["eval/accuracy"] > 0.3  # learns (chance is 0.1)


def test_evaluation_leaves_the_statistics_alone(bn_run, tmp_path):
  _, result = bn_run
  # Evaluating at every chunk's end instead of only at the last changes nothing in the state.
  config = load_config(CNN + ":smoke", {**BN, "eval_every_steps": 20})
  again = train_and_evaluate(config, workdir=str(tmp_path / "often"))
  assert tree_equal(again.state.model_state, result.state.model_state)
  assert tree_equal(again.state.params, result.state.params)


def test_the_shipped_resnet_config_trains_on_digits_and_records_its_state(tmp_path):
  config = load_config(str(CONFIGS / "resnet.py") + ":smoke", {"num_steps": 20,
                                                                "eval_every_steps": 20})
  result = train_and_evaluate(config, workdir=str(tmp_path / "resnet"))
  assert "batch_stats" in result.state.model_state
  assert result.metrics["eval/accuracy"] > 0.5 and "eval/ema/accuracy" in result.metrics
  info = json.loads((tmp_path / "resnet" / "summary.json").read_text())["trainer"]
  assert info["model_state"] == ["batch_stats"] and info["precision"] == "float32"
  assert info["accumulate_steps"] == 2 and info["micro_batch_size"] == 64
  assert info["augment"] == {"crop_padding": 1, "noise_std": 0.02}


def test_backfilled_diagnostics_use_the_saved_statistics(bn_run, tmp_path):
  root, _ = bn_run
  # The run kept no diagnostics; backfill one at the final checkpoint, and compare it with the
  # same diagnostic computed on the trained state in this process.
  assert diagnose(str(root / "run"), ["confusion_matrix"], steps="latest") == {
      N: ["confusion_matrix"]}
  with np.load(root / "run" / "diagnostics" / "confusion_matrix" / f"step_{N}.npz") as f:
    backfilled = f["matrix"]
  exp = build_experiment(load_config(CNN + ":smoke", BN))
  _, result = bn_run
  from gmf_jax.models.variables import state_apply

  probe = exp.dataset.test.get(np.arange(min(exp.config.probe_size, len(exp.dataset.test))))
  state = result.state
  logits = state_apply(state)({"params": state.params}, probe["x"], train=False)
  expected = np.zeros_like(backfilled)
  np.add.at(expected, (probe["y"], np.asarray(jnp.argmax(logits, -1))), 1)
  assert np.array_equal(backfilled, expected)
  # With the initial statistics instead, the predictions differ: the saved ones were used.
  fresh = init_state(exp, make_keys(0)).model_state
  other = state_apply(state.replace(model_state=fresh))({"params": state.params}, probe["x"],
                                                        train=False)
  assert not np.array_equal(np.argmax(other, -1), np.argmax(logits, -1))


def test_kill_9_then_resume_equals_uninterrupted_with_every_part_on(all_run, tmp_path):
  root, reference = all_run
  seed = random.randrange(10**6)
  args = [f"--config={CNN}:smoke", *_cli_args({**ALL, "checkpoint.every_steps": 5}),
          "--workdir=run"]
  proc = subprocess.Popen([sys.executable, "-m", "gmf_jax.main", *args], cwd=tmp_path,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  target = random.Random(seed).choice([5, 10])
  checkpoints = tmp_path / "run" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if checkpoints.exists() and any(d.isdigit() and int(d) >= target
                                    for d in os.listdir(checkpoints)):
      break
    time.sleep(0.02)
  assert proc.poll() is None, proc.communicate()[1]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = run_cli(*args, cwd=tmp_path)
  assert resumed.returncode == 0, (seed, resumed.stderr)
  assert "resuming" in resumed.stdout.lower(), seed
  step, state = _final_state(tmp_path / "run")
  ref_step, ref_state = _final_state(root / "ref")
  assert step == ref_step == N
  for part in ("params", "model_state", "ema", "loss_scale", "opt_state"):
    assert tree_equal(state[part], ref_state[part]), (seed, part)
  assert _rows(tmp_path / "run") == _rows(root / "ref"), seed
  assert {"eval/ema/loss", "train/skipped", "train/loss_scale"} <= {
      n for _, n, _ in _rows(root / "ref")}


def test_a_population_with_state_matches_each_member_alone(tmp_path):
  # Two seeds x two EMA decays with BatchNorm and augmentation: one program of four members
  # (the decay is data), each member as trained alone.
  over = {**BN, "data.augment.crop_padding": 1, "ema.evaluate": "both"}
  spec = {"config": f"{CNN}:smoke", "method": "grid", "seeds": 2,
          "parameters": {"ema.decay": {"values": [0.8, 0.95]}}}
  result = run_sweep(make_sweep(spec, over), str(tmp_path / "sweep"))
  assert result.counts() == {"completed": 4}
  members = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["members"]
  assert {m["population"] for m in members} == {"p0"}  # one program
  finals = [json.loads((tmp_path / "sweep" / m["folder"] / "summary.json").read_text())
            ["metrics"]["eval/loss"]["final"] for m in members]
  assert len({f for f in finals}) >= 2  # the seeds differ (the decay changes eval/ema only)
  for m in members[-1:]:  # the last member: its index is the farthest from a plain run's
    alone = tmp_path / f"alone-{m['name']}"
    train_and_evaluate(load_config(CNN + ":smoke", {**over, **m["overrides"]}), str(alone))
    got = {(s, n): float(v) for s, n, v in _rows(tmp_path / "sweep" / m["folder"])}
    want = {(s, n): float(v) for s, n, v in _rows(alone)}
    assert got.keys() == want.keys()
    for key in want:
      assert got[key] == pytest.approx(want[key], rel=POP_RTOL, abs=1e-6), (m["name"], key)


# ---- augmentation ----------------------------------------------------------------------------


def test_augmentation_is_reproducible_and_differs_across_keys():
  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 8, 8, 1))
  batch = {"x": x, "y": jnp.zeros(16, jnp.int32)}
  augment = Augment(crop_padding=2, flip=True, noise=True)
  hparams = {"data.augment.noise_std": jnp.float32(0.1)}
  a = augment(jax.random.PRNGKey(1), batch, hparams)["x"]
  b = augment(jax.random.PRNGKey(1), batch, hparams)["x"]
  c = augment(jax.random.PRNGKey(2), batch, hparams)["x"]
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  assert a.shape == x.shape


def test_random_crop_is_a_shifted_window_of_the_padded_image():
  x = jnp.arange(2 * 4 * 4, dtype=jnp.float32).reshape((2, 4, 4, 1)) + 1
  out = np.asarray(random_crop(jax.random.PRNGKey(3), x, 1))
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  for i in range(2):
    windows = [padded[i, dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)]
    assert any(np.array_equal(out[i], w) for w in windows)


def test_augmentation_differs_across_steps_and_members_and_feeds_agree(tmp_path):
  aug = {**SHORT, **SMALL_CNN, "eval_every_steps": 20, "data.augment.crop_padding": 1,
         "data.augment.flip": True}
  runs = {}
  for name, extra in [("device", {"data.on_device": "yes"}), ("again", {"data.on_device": "yes"}),
                      ("streamed", {"data.on_device": "no"}),
                      ("plain", {"data.augment.crop_padding": 0, "data.augment.flip": False})]:
    runs[name] = train_and_evaluate(load_config(CNN + ":smoke", {**aug, **extra}),
                                    str(tmp_path / name))
  assert tree_equal(runs["device"].state.params, runs["again"].state.params)  # reproducible
  # The streamed feed hands the step the same batches, so the same augmented batches.
  assert tree_equal(runs["device"].state.params, runs["streamed"].state.params)
  assert not tree_equal(runs["device"].state.params, runs["plain"].state.params)


def test_a_users_augmentation_function_runs_in_the_step(tmp_path):
  module = tmp_path / "my_aug.py"
  module.write_text("def invert(rng, batch):\n    return {**batch, 'x': 1.0 - batch['x']}\n")
  over = {**SHORT, **SMALL_CNN, "num_steps": 10, "data.augment.fn": f"{module}:invert"}
  a = train_and_evaluate(load_config(CNN + ":smoke", over), str(tmp_path / "a"))
  b = train_and_evaluate(load_config(CNN + ":smoke", {**over, "data.augment.fn": ""}),
                         str(tmp_path / "b"))
  assert not tree_equal(a.state.params, b.state.params)
  bad = tmp_path / "bad_aug.py"
  bad.write_text("def crop(rng, batch):\n    return {**batch, 'x': batch['x'][:, :4]}\n")
  with pytest.raises(ConfigError, match="must return the batch with the same keys, shapes"):
    build_experiment(load_config(CNN + ":smoke", {"data.augment.fn": f"{bad}:crop"}))


# ---- the step: accumulation, averaged weights, loss scaling ----------------------------------


def _step_setup(**overrides):
  config = load_config(MLP + ":smoke", {"batch_size": 64, **overrides})
  exp = build_experiment(config)
  state = init_state(exp, make_keys(0))
  data = exp.dataset.train.get(np.arange(64 * 5))
  batches = [{k: jnp.asarray(v[i * 64:(i + 1) * 64]) for k, v in data.items()} for i in range(5)]
  return exp, state, batches


def _run_steps(exp, state, batches, options=None):
  step = jax.jit(functools.partial(train_step, loss_for=exp.loss_for, tx_for=exp.tx_for,
                                   options=options or exp.step))
  history = [state]
  for i, batch in enumerate(batches):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    history.append(state)
  return history, metrics


def test_accumulating_four_micro_batches_matches_one_step_on_the_batch():
  exp, state, batches = _step_setup()
  one, m1 = _run_steps(exp, state, batches, StepOptions(accumulate_steps=1))
  four, m4 = _run_steps(exp, state, batches, StepOptions(accumulate_steps=4))
  for a, b in zip(jax.tree_util.tree_leaves(one[-1].params),
                  jax.tree_util.tree_leaves(four[-1].params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert int(four[-1].step) == 5  # optimizer steps, not micro-batches
  np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-5)


def test_accumulation_through_the_loop_counts_optimizer_steps(tmp_path):
  over = {**SHORT, "num_steps": 20, "eval_every_steps": 20, "batch_size": 64}
  one = train_and_evaluate(load_config(MLP + ":smoke", over), str(tmp_path / "k1"))
  four = train_and_evaluate(load_config(MLP + ":smoke", {**over,
                                                          "optimizer.accumulate_steps": 4}),
                            str(tmp_path / "k4"))
  assert int(four.state.step) == 20
  assert [r[:2] for r in _rows(tmp_path / "k1")] == [r[:2] for r in _rows(tmp_path / "k4")]
  assert four.metrics["eval/loss"] == pytest.approx(one.metrics["eval/loss"], rel=1e-4)


def test_ema_equals_the_average_computed_by_hand():
  decay = 0.8
  exp, state, batches = _step_setup(**{"ema.decay": decay})
  history, _ = _run_steps(exp, state, batches)
  by_hand = history[0].params
  for s in history[1:]:
    by_hand = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, by_hand, s.params)
  for a, b in zip(jax.tree_util.tree_leaves(history[-1].ema["params"]),
                  jax.tree_util.tree_leaves(by_hand), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert not tree_equal(history[-1].ema["params"], history[-1].params)


def test_ema_is_evaluated_and_picks_the_best_checkpoint(tmp_path):
  over = {**SHORT, "num_steps": 20, "eval_every_steps": 10, "ema.decay": 0.9,
          "ema.evaluate": "ema"}
  result = train_and_evaluate(load_config(MLP + ":smoke", over), str(tmp_path / "ema"))
  assert "eval/ema/loss" in result.metrics and "eval/loss" not in result.metrics
  config = json.loads((tmp_path / "ema" / "config.json").read_text())
  assert config["checkpoint"]["best_metric"] == "eval/ema/loss"  # follows the evaluated weights
  summary = json.loads((tmp_path / "ema" / "summary.json").read_text())
  assert "eval/ema/loss" in summary["metrics"]
  assert os.listdir(tmp_path / "ema" / "best_checkpoint")


def test_diagnostics_run_on_the_averaged_weights(tmp_path):
  over = {**SHORT, "num_steps": 10, "eval_every_steps": 10, "ema.decay": 0.5}
  config = load_config(MLP + ":smoke", over)
  with config.unlocked():
    config.diagnostics.weight_stats = {"schedule": "end", "weights": "ema"}
    config.diagnostics.live = {"fn": "weight_stats", "schedule": "end"}
  result = train_and_evaluate(config, str(tmp_path / "diag"))
  ema_norm = result.metrics["diag/weight_stats/param_norm"]
  live_norm = result.metrics["diag/live/param_norm"]
  assert ema_norm != live_norm
  params = result.state.ema["params"]
  expected = np.sqrt(sum(float(jnp.sum(jnp.square(p))) for p in jax.tree_util.tree_leaves(
      params)))
  assert ema_norm == pytest.approx(expected, rel=1e-5)
  with config.unlocked():
    config.ema.decay = None
  with pytest.raises(ConfigError, match="weights='ema' needs averaged weights"):
    build_experiment(config)


def test_float16_skips_overflowed_steps_and_halves_the_scale():
  exp, state, batches = _step_setup(**{"precision.compute": "float16"})
  huge = state.replace(loss_scale={**state.loss_scale, "scale": jnp.float32(2.0**40)})
  history, metrics = _run_steps(exp, huge, batches[:1])
  after = history[-1]
  assert float(metrics["skipped"]) == 1.0
  assert tree_equal(after.params, huge.params) and tree_equal(after.opt_state, huge.opt_state)
  assert float(after.loss_scale["scale"]) == 2.0**39 and int(after.loss_scale["skipped"]) == 1
  history, metrics = _run_steps(exp, state, batches[:2])  # the default scale: no overflow
  assert float(metrics["skipped"]) == 0.0 and not tree_equal(history[-1].params, state.params)


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_low_precision_runs_finish_near_float32(tmp_path, compute):
  over = {**SHORT, "num_steps": 30, "eval_every_steps": 30}
  ref = train_and_evaluate(load_config(MLP + ":smoke", over), str(tmp_path / "f32"))
  low = train_and_evaluate(load_config(MLP + ":smoke", {**over, "precision.compute": compute}),
                           str(tmp_path / compute))
  assert low.metrics["eval/loss"] == pytest.approx(ref.metrics["eval/loss"],
                                                   rel=LOW_PRECISION_RTOL)
  assert low.state.params["logits"]["kernel"].dtype == jnp.float32  # params stay float32
  info = json.loads((tmp_path / compute / "summary.json").read_text())["trainer"]
  assert info["precision"] == compute and info["loss_scaling"] == (compute == "float16")


@pytest.mark.parametrize("norm, layer, state", [("none", None, False), ("batch", "BatchNorm", True),
                                                ("layer", "LayerNorm", False),
                                                ("group", "GroupNorm", False)])
def test_cnn_norm_choices_build_their_layers(norm, layer, state):
  from gmf_jax.train.build import abstract_state

  exp = build_experiment(load_config(CNN + ":smoke", {"model.norm": norm}))
  shapes = abstract_state(exp, make_keys(0))
  assert ("norm_0" in shapes.params) == (layer is not None)
  assert bool(shapes.model_state) == state
  if state:
    assert set(shapes.model_state["batch_stats"]["norm_0"]) == {"mean", "var"}
  if layer:
    assert exp.model.tabulate(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)),
                              depth=1).count(layer) >= 2


def test_members_of_a_population_augment_independently():
  # Two members with the same parameters and data order, differing only in their train key:
  # without augmentation (and without dropout) they train alike; with noise they do not.
  from gmf_jax.members import with_member_axis
  from gmf_jax.train.step import population_chunk, train_chunk_on_device

  def two_members(noise):
    exp, state, _ = _step_setup(**{"data.augment.noise_std": noise})
    keys = make_keys(0)
    keys = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), keys)._replace(
        train=jnp.stack([make_keys(0).train, make_keys(1).train]))
    pop = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]),
                                 with_member_axis(state).replace(step=None)).replace(step=0)
    chunk = functools.partial(train_chunk_on_device, loss_for=exp.loss_for, tx_for=exp.tx_for,
                              batch_size=64, num_steps=3, options=exp.step)
    data = {k: jnp.asarray(v) for k, v in exp.dataset.train.get(np.arange(640)).items()}
    out, _ = jax.jit(population_chunk(chunk, pop, 2))(pop, keys, data, np.int32(3))
    return jax.tree_util.tree_map(lambda a: np.asarray(a), out.params)

  plain, noisy = two_members(0.0), two_members(0.3)
  first = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)
  assert tree_equal(first(plain, 0), first(plain, 1))
  assert not tree_equal(first(noisy, 0), first(noisy, 1))


def test_decay_and_noise_are_data_that_a_sweep_shares_one_program_over():
  from gmf_jax.train.hparams import program_key

  def key(**over):
    return program_key(load_config(CNN + ":smoke", over))

  base = key(**{"ema.decay": 0.9, "data.augment.noise_std": 0.1})
  assert key(**{"ema.decay": 0.99, "data.augment.noise_std": 0.3}) == base
  assert key(**{"ema.decay": None, "data.augment.noise_std": 0.1}) != base  # EMA off
  assert key(**{"ema.decay": 0.9, "data.augment.noise_std": 0.0}) != base  # noise off
  assert key(**{"ema.decay": 0.9, "data.augment.noise_std": 0.1,
                "optimizer.accumulate_steps": 2}) != base  # a shape: another program
  exp = build_experiment(load_config(CNN + ":smoke", {"ema.decay": 0.95,
                                                      "data.augment.noise_std": 0.2}))
  assert float(exp.hparams["ema.decay"]) == pytest.approx(0.95)
  assert float(exp.hparams["data.augment.noise_std"]) == pytest.approx(0.2)


def test_the_loss_scale_doubles_after_a_run_of_finite_steps_and_never_drops_below_one():
  from gmf_jax.train import precision

  scale = {"scale": jnp.float32(8.0), "good_steps": jnp.int32(precision.GROWTH_INTERVAL - 1),
           "skipped": jnp.int32(0)}
  grown = precision.next_loss_scale(scale, jnp.bool_(True))
  assert float(grown["scale"]) == 16.0 and int(grown["good_steps"]) == 0
  kept = precision.next_loss_scale({**scale, "good_steps": jnp.int32(5)}, jnp.bool_(True))
  assert float(kept["scale"]) == 8.0 and int(kept["good_steps"]) == 6
  floor = precision.next_loss_scale({**scale, "scale": jnp.float32(1.0)}, jnp.bool_(False))
  assert float(floor["scale"]) == precision.MIN_SCALE and int(floor["skipped"]) == 1


def test_an_overflowed_float16_step_is_no_error_while_the_scale_can_shrink():
  from gmf_jax.train.recorder import NonFiniteCheck

  def chunk(scale):
    return {"loss": np.array([1.0, 1.0, 0.9], np.float32),
            "grad_norm": np.array([np.inf, 2.0, 1.5], np.float32),
            "skipped": np.array([1.0, 0.0, 0.0], np.float32),
            "loss_scale": np.array([scale, scale / 2, scale / 2], np.float32)}

  check = NonFiniteCheck("stop", 10)
  metrics = chunk(2.0**15)
  assert check.check(metrics, 0) is None
  assert list(metrics["skipped"]) == [1.0, 0.0, 0.0] and check.skipped == 1
  assert check.schedule_steps([3], 0) == [2]  # the skipped update did not advance the schedule
  error = NonFiniteCheck("stop", 10).check(chunk(1.0), 10)  # at the smallest scale: an error
  assert error is not None and error.step == 11

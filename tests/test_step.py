"""The pure core: a train step, and the scan chunk vmapped over seeds."""

import functools

import jax
import numpy as np
import pytest

import gmf_jax
from gmf_jax.train import pipeline
from gmf_jax.train.build import build_experiment, init_state
from gmf_jax.train.step import make_keys, make_train_step, train_chunk_on_device
from tests.conftest import CONFIGS, tree_equal


def _experiment():
  config = gmf_jax.load_config(str(CONFIGS / "vae.py") + ":smoke")
  return build_experiment(config)


def test_train_step_is_pure():
  """The step is a function of its arguments alone: the same arguments give bitwise the same
  result; the hyperparameters come from `state.hparams` (not from values captured when the step
  was built or traced), the randomness from `rng`; the inputs are left as they were."""
  mlp = str(CONFIGS / "mlp.py") + ":smoke"
  # Dropout draws from `rng`; a constant rate is > 0 at step 0; label smoothing on (0 would
  # switch it off, which changes the program instead of a value).
  base = {"model.dropout_rate": 0.1, "schedule.name": "constant", "loss.label_smoothing": 0.05}
  exp = build_experiment(gmf_jax.load_config(mlp, base))
  keys = make_keys(0)
  state = init_state(exp, keys)
  host_state = jax.device_get(state)
  batch = pipeline.materialize(exp.dataset.train)
  batch = {k: v[:16] for k, v in batch.items()}
  step = jax.jit(make_train_step(exp.loss_for, exp.tx_for))
  a, metrics_a = step(state, batch, keys.train)
  b, metrics_b = step(state, batch, keys.train)
  assert int(a.step) == 1 and tree_equal(jax.device_get(state), host_state)  # inputs untouched
  assert tree_equal(a, b) and tree_equal(metrics_a, metrics_b)
  assert set(metrics_a) >= {"loss", "grad_norm", "accuracy"}
  # Other hyperparameters through the same step: what a step built for them computes.
  changed = {"optimizer.learning_rate": 0.01, "optimizer.momentum": 0.5,
             "loss.label_smoothing": 0.2}
  other = build_experiment(gmf_jax.load_config(mlp, {**base, **changed}))
  assert other.hparams.keys() == exp.hparams.keys()
  moved = state.replace(hparams={k: jax.numpy.asarray(v) for k, v in other.hparams.items()})
  c, metrics_c = step(moved, batch, keys.train)
  built = init_state(other, keys)  # the same parameters; its own optimizer and values
  d, metrics_d = jax.jit(make_train_step(other.loss_for, other.tx_for))(built, batch, keys.train)
  assert tree_equal((c.params, c.opt_state), (d.params, d.opt_state))
  assert tree_equal(metrics_c, metrics_d)
  assert metrics_c["loss"] != metrics_a["loss"]  # the smoothing is the step's own
  assert not tree_equal(c.params, a.params)
  # Another key, other dropout masks.
  e, metrics_e = step(state, batch, jax.random.fold_in(keys.train, 1))
  assert metrics_e["loss"] != metrics_a["loss"] and not tree_equal(e.params, a.params)


def test_chunk_vmaps_over_seeds():
  exp = _experiment()
  data = pipeline.to_device(exp.dataset.train)
  chunk = functools.partial(train_chunk_on_device, loss_for=exp.loss_for, tx_for=exp.tx_for,
                            batch_size=32, num_steps=20,
                            num_active=np.int32(20))
  seeds = [0, 1, 2]
  keys = [make_keys(s) for s in seeds]
  states = [init_state(exp, k) for k in keys]
  stack = lambda trees: jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)
  vmapped = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)))
  ens_state, ens_metrics = vmapped(stack(states), stack(keys), data)
  assert ens_metrics["loss"].shape == (3, 20)
  single = jax.jit(chunk)
  for i in range(len(seeds)):
    state_i, metrics_i = single(states[i], keys[i], data)
    # A vmapped member is not bitwise a single run (different fusion), but close.
    np.testing.assert_allclose(ens_metrics["loss"][i], metrics_i["loss"], rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(ens_state.params),
                    jax.tree_util.tree_leaves(state_i.params), strict=True):
      np.testing.assert_allclose(a[i], b, rtol=1e-3, atol=1e-5)
  assert not np.allclose(ens_metrics["loss"][0], ens_metrics["loss"][1])


def test_chunk_steps_only_the_active_slots():
  exp = _experiment()
  keys = make_keys(0)
  data = pipeline.to_device(exp.dataset.train)
  chunk = jax.jit(functools.partial(train_chunk_on_device, loss_for=exp.loss_for,
                                    tx_for=exp.tx_for, batch_size=32, num_steps=10))
  short, metrics = chunk(init_state(exp, keys), keys, data, np.int32(3))
  assert int(short.step) == 3 and np.all(np.asarray(metrics["loss"][3:]) == 0)
  full, _ = chunk(init_state(exp, keys), keys, data, np.int32(10))
  resumed, _ = chunk(short, keys, data, np.int32(7))
  assert int(resumed.step) == 10
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, full.params, resumed.params))


def test_global_norm_matches_optax_in_both_paths(monkeypatch):
  import optax

  from gmf_jax.train import step as step_module

  tree = {"a": np.arange(12.0, dtype=np.float32).reshape(3, 4) - 5, "b": np.ones(7, np.float32)}
  expected = float(optax.tree.norm(tree))
  assert float(step_module.global_norm(tree)) == pytest.approx(expected, rel=1e-6)
  monkeypatch.setattr(step_module, "_CONCAT_NORM_MAX", 4)  # the leaf-by-leaf path
  assert float(step_module.global_norm(tree)) == pytest.approx(expected, rel=1e-6)


def test_chunk_rejects_non_scalar_metrics():
  exp = _experiment()
  keys = make_keys(0)

  def loss_fn(params, apply_fn, batch, rng, train=True):
    loss, aux = exp.loss(params, apply_fn, batch, rng, train)
    return loss, {**aux, "per_example": batch["x"].reshape(batch["x"].shape[0], -1).sum(-1)}

  chunk = functools.partial(train_chunk_on_device, loss_for=lambda h: loss_fn,
                            tx_for=exp.tx_for, batch_size=32, num_steps=4)
  with pytest.raises(ValueError, match="per_example"):
    chunk(init_state(exp, keys), keys, pipeline.to_device(exp.dataset.train), np.int32(4))


def test_learning_rates_match_the_schedule_across_blocks():
  import optax

  from gmf_jax.train.metering import LearningRates

  schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, 7, 1003, 0.01)
  rates = LearningRates(jax.jit(jax.vmap(schedule)), every=10, start=0, last=1003, block=8)
  for chunk_start in range(0, 1003, 30):  # crosses several blocks and ends off the grid
    steps = [s for s in range(chunk_start + 1, min(chunk_start + 30, 1003) + 1)
             if s % 10 == 0 or s == 1003]
    expected = [float(schedule(s - 1)) for s in steps]
    np.testing.assert_allclose(rates(steps), expected, rtol=1e-5)
  assert rates([1003]) == pytest.approx([float(schedule(1002))])

"""The pure core: a train step, and the scan chunk vmapped over seeds."""

import functools

import jax
import numpy as np

import gmf_jax
from gmf_jax.train import pipeline
from gmf_jax.train.build import build_experiment, init_state
from gmf_jax.train.step import make_keys, make_train_step, train_chunk_on_device
from tests.conftest import CONFIGS


def _experiment():
  config = gmf_jax.load_config(str(CONFIGS / "vae.py") + ":smoke")
  return build_experiment(config)


def test_train_step_is_pure():
  exp = _experiment()
  keys = make_keys(0)
  state = init_state(exp, keys)
  batch = pipeline.materialize(exp.dataset.train)
  batch = {k: v[:16] for k, v in batch.items()}
  step = jax.jit(make_train_step(exp.loss))
  a, metrics_a = step(state, batch, keys.train)
  b, metrics_b = step(state, batch, keys.train)
  assert int(a.step) == 1 and int(state.step) == 0  # the input state is untouched
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, a.params, b.params))
  assert set(metrics_a) >= {"loss", "grad_norm", "nelbo", "kl", "recon"}


def test_chunk_vmaps_over_seeds():
  exp = _experiment()
  data = pipeline.to_device(exp.dataset.train)
  chunk = functools.partial(train_chunk_on_device, loss_fn=exp.loss, batch_size=32, num_steps=20,
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
  chunk = jax.jit(functools.partial(train_chunk_on_device, loss_fn=exp.loss, batch_size=32,
                                    num_steps=10))
  short, metrics = chunk(init_state(exp, keys), keys, data, np.int32(3))
  assert int(short.step) == 3 and np.all(np.asarray(metrics["loss"][3:]) == 0)
  full, _ = chunk(init_state(exp, keys), keys, data, np.int32(10))
  resumed, _ = chunk(short, keys, data, np.int32(7))
  assert int(resumed.step) == 10
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, full.params, resumed.params))

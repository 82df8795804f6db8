"""Optimizer and schedule settings do what they say."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gmf_jax import ConfigError
from gmf_jax.config import default_config
from gmf_jax.train.optim import make_optimizer, make_schedule


def _schedule(**kw):
  cfg = default_config().schedule
  for k, v in kw.items():
    cfg[k] = v
  return make_schedule(cfg, 1.0, 100)


def test_cosine_with_warmup_values():
  fn = _schedule(name="warmup_cosine", warmup_steps=20, end_value=0.1)
  assert float(fn(10)) == pytest.approx(0.5)
  assert float(fn(20)) == pytest.approx(1.0)
  assert float(fn(60)) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)  # halfway through decay
  assert float(fn(100)) == pytest.approx(0.1)


def test_step_and_exponential_schedules():
  step = _schedule(name="step", boundaries=(30, 60), decay_rate=0.5)
  assert [float(step(s)) for s in (0, 29, 30, 59, 60, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
  expo = _schedule(name="exponential", decay_rate=0.1, transition_steps=50)
  assert float(expo(50)) == pytest.approx(0.1) and float(expo(100)) == pytest.approx(0.01)


def test_warmup_cosine_needs_warmup():
  with pytest.raises(ConfigError, match="warmup_steps > 0"):
    _schedule(name="warmup_cosine", warmup_steps=0)


def _optimizer(**kw):
  cfg = default_config().optimizer
  for k, v in kw.items():
    cfg[k] = v
  return make_optimizer(cfg, optax.constant_schedule(cfg.learning_rate))


def test_grad_clip_norm_bounds_the_update():
  tx = _optimizer(name="sgd", learning_rate=1.0, grad_clip_norm=0.5)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
  assert float(optax.tree.norm(updates)) == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_kernels_not_biases(name):
  tx = _optimizer(name=name, learning_rate=0.1, weight_decay=0.5)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  zeros = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert np.all(np.asarray(updates["kernel"]) < 0)
  assert np.all(np.asarray(updates["bias"]) == 0)


def test_nesterov_changes_sgd():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.ones(3)}
  outs = []
  for nesterov in (False, True):
    tx = _optimizer(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    state = tx.init(params)
    for _ in range(2):
      updates, state = tx.update(grads, state, params)
    outs.append(np.asarray(updates["w"]))
  assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(name="adam", momentum=0.9), "optimizer.momentum=0.9 has no effect"),
        (dict(name="sgd", b1=0.8), "optimizer.b1=0.8 has no effect"),
        (dict(learning_rate=-1.0), "learning_rate=-1.0 must be > 0"),
        (dict(grad_clip_norm=0.0), "grad_clip_norm=0.0 must be > 0"),
        (dict(name="lbfgs"), "optimizer.name='lbfgs' is unknown"),
    ],
)
def test_bad_optimizer_settings(kw, match):
  with pytest.raises(ConfigError, match=match):
    _optimizer(**kw)

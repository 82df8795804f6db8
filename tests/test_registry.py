"""Every registered component, one parameterized test each: it builds, runs, stays finite."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gmf_jax
from gmf_jax.config import default_config
from gmf_jax.data import DATASETS, make_dataset
from gmf_jax.models import MODELS
from gmf_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from tests.conftest import CONFIGS

# The loss and data each model is trained with.
MODEL_SETUPS = {
    "mlp_classifier": ("cross_entropy", "digits"),
    "cnn_classifier": ("cross_entropy", "digits"),
    "mlp_vae": ("elbo", "digits"),
    "conv_vae": ("elbo", "digits"),
    "autoencoder": ("reconstruction", "digits"),
    "resnet": ("cross_entropy", "digits"),
}


def test_every_model_has_a_setup():
  assert set(MODEL_SETUPS) == set(MODELS)
  assert TRAINED_ELSEWHERE <= set(MODELS)


# The ResNet trains through its own shipped config (tests/test_trainer_parts.py:
# test_the_shipped_resnet_config_trains_on_digits_and_records_its_state), the slowest to compile.
TRAINED_ELSEWHERE = {"resnet"}


@pytest.mark.parametrize("name", sorted(set(MODELS) - TRAINED_ELSEWHERE))
def test_every_model_trains(tmp_path, name):
  loss, data = MODEL_SETUPS[name]
  config = gmf_jax.load_config(str(CONFIGS / "mlp.py") + ":smoke", {"num_steps": 20})
  with config.unlocked():
    config.model = {"name": name}
    config.loss = {"name": loss}
    config.data.name = data
  result = gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / name))
  assert int(result.state.step) == 20
  assert result.metrics and all(np.isfinite(v) for v in result.metrics.values())


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_loads(name):
  config = default_config().data
  with config.unlocked():
    config.name = name
  dataset = make_dataset(config)
  batch = dataset.train.get(np.arange(5))
  assert batch["x"].shape == (5, *dataset.example_shape) and batch["x"].dtype == np.float32
  assert batch["y"].shape == (5,) and batch["y"].dtype == np.int32
  assert 0 <= batch["y"].min() and batch["y"].max() < dataset.num_classes
  assert len(dataset.train) > len(dataset.test) > 0
  assert np.isfinite(batch["x"]).all()


def _quadratic_steps(tx, steps=50):
  """Minimises |w - 3|^2 and returns the final w."""
  params = {"w": jnp.zeros((4, 4))}
  opt_state = tx.init(params)
  grad_fn = jax.grad(lambda p: jnp.sum((p["w"] - 3.0) ** 2))
  for _ in range(steps):
    updates, opt_state = tx.update(grad_fn(params), opt_state, params)
    params = optax.apply_updates(params, updates)
  return params["w"]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_descends(name):
  cfg = default_config()
  cfg.optimizer.name = name
  cfg.optimizer.learning_rate = 0.05
  tx = make_optimizer(cfg.optimizer, optax.constant_schedule(0.05))
  w = _quadratic_steps(tx)
  assert np.all(np.isfinite(w)) and float(jnp.mean(jnp.abs(w - 3.0))) < 2.9


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_is_finite_and_bounded(name):
  cfg = default_config().schedule
  cfg.name = name
  cfg.warmup_steps = 10
  if name == "step":
    cfg.boundaries = (50,)
  fn = make_schedule(cfg, 0.1, 100)
  values = np.array([float(fn(s)) for s in range(100)])
  assert np.isfinite(values).all() and values.max() <= 0.1 + 1e-7 and values.min() >= 0
  assert values[0] == 0.0 and abs(values[10] - 0.1) < 1e-6  # warmup ends at the peak

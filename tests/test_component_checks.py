"""Each component refuses its own bad options at build time: one ConfigError naming the key, the
value and what is allowed, before any run folder or compute (models, synthetic data,
learning-rate schedules, diagnostics and their schedules)."""

import flax.linen as nn
import jax
import pytest

import gmf_jax
from gmf_jax import ConfigError
from gmf_jax.train.build import build_experiment
from tests.conftest import CONFIGS


class NoisyLogits(nn.Module):
  """A user classifier that draws from the 'sample' stream in __call__: it trains (the loss
  passes rngs), but the Jacobian diagnostic applies it without rngs, which only a trace finds.
  It takes (and ignores) the other fields of configs/mlp.py's model."""

  num_classes: int
  hidden: tuple = ()
  activation: str = "relu"
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train=False):
    logits = nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))
    return logits + jax.random.normal(self.make_rng("sample"), logits.shape)


def _has(config, key: str) -> bool:
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  return leaf in node


def _config(path: str, overrides: dict):
  """`load_config(path, overrides)` for the keys the config has; a key it lacks (a loader's
  option, a diagnostic entry, a model field left to its default) is added to its section, as a
  config file would set it."""
  path = str(CONFIGS / path)
  shipped = gmf_jax.load_config(path)
  config = gmf_jax.load_config(path, {k: v for k, v in overrides.items() if _has(shipped, k)})
  for key, value in overrides.items():
    if not _has(shipped, key):
      *parents, leaf = key.split(".")
      node = config
      for part in parents:
        node = node[part]
      with node.unlocked():
        node[leaf] = value
  return config


VAE, CONV, MLP, MOONS, CNN = ("vae.py:smoke", "vae.py:smoke,conv", "mlp.py:smoke",
                              "mlp.py:smoke,moons", "cnn.py:smoke")
GMM = {"data.name": "gaussian_mixture"}
SPIRALS = {"data.name": "spirals"}


def _diag(name, **entry):
  return {f"diagnostics.{name}": entry}


CASES = [
    # Models: each Module checks its fields when it is constructed.
    (MLP, {"model.dropout_rate": 1.5}, r"model.dropout_rate=1.5 must be in \[0, 1\)\."),
    (CNN, {"model.dropout_rate": -0.1}, r"model.dropout_rate=-0.1 must be in \[0, 1\)"),
    (MLP, {"model.hidden": (64, 0)}, r"model.hidden=\(64, 0\) must be a sequence of integers >= 1"),
    (VAE, {"model.hidden": (128, -1)}, r"model.hidden=\(128, -1\) must be a sequence of integers"),
    (MLP, {"model.activation": "swish"}, r"model.activation='swish' must be one of 'elu', "),
    (CONV, {"model.activation": "sigmoid"}, r"model.activation='sigmoid' must be one of"),
    (MLP, {"model.num_classes": 1}, r"model.num_classes=1 must be an integer >= 2\. A softmax"),
    (CNN, {"model.features": ()}, r"model.features=\(\) must be a non-empty sequence of integers"),
    (CONV, {"model.features": (32, 0)}, r"model.features=\(32, 0\) must be a non-empty sequence"),
    (CNN, {"model.dense": 0}, r"model.dense=0 must be an integer >= 1\."),
    (CNN, {"model.kernel_size": 0}, r"model.kernel_size=0 must be an integer >= 1\."),
    (VAE, {"model.latent_dim": 0}, r"model.latent_dim=0 must be an integer >= 1\."),
    (CONV, {"model.latent_dim": -2}, r"model.latent_dim=-2 must be an integer >= 1\."),
    (VAE, {"model.data_shape": ()}, r"model.data_shape=\(\) must be a non-empty sequence"),
    (VAE, {"model.data_shape": (8, 8, 0)}, r"model.data_shape=\(8, 8, 0\) must be a non-empty"),
    (CONV, {"model.data_shape": (64,)}, r"model.data_shape=\(64,\) must be an image shape \(H, W"),
    (CONV, {"model.features": (8, 8, 8, 8)},
     r"model.features=\(8, 8, 8, 8\) has 4 stride-2 layers, so ConvVAE needs H and W divisible "
     r"by 16; model.data_shape=\(8, 8, 1\): use at most 3 entries"),
    # Synthetic data: each loader checks its options.
    (MOONS, {"data.num_train": 0}, r"data.num_train=0 must be an integer >= 1\."),
    (MOONS, {"data.num_test": 0}, r"data.num_test=0 must be an integer >= 1\."),
    (MOONS, {"data.noise": -0.1}, r"data.noise=-0.1 must be >= 0\."),
    (MOONS, {"data.data_seed": -1}, r"data.data_seed=-1 must be an integer >= 0\."),
    (MOONS, {"data.data_seed": 1.5}, r"data.data_seed=1.5 must be an integer >= 0\."),
    (MLP, {**GMM, "data.num_components": 0}, r"data.num_components=0 must be an integer >= 1\."),
    (MLP, {**GMM, "data.radius": 0.0}, r"data.radius=0.0 must be > 0\."),
    (MLP, {**GMM, "data.std": -1.0}, r"data.std=-1.0 must be >= 0\."),
    (MLP, {**GMM, "data.num_components": 1}, r"model.num_classes=1 must be an integer >= 2"),
    (MOONS, {**SPIRALS, "data.num_arms": 0}, r"data.num_arms=0 must be an integer >= 1\."),
    (MOONS, {**SPIRALS, "data.turns": 0.0}, r"data.turns=0.0 must be > 0\."),
    (MOONS, {**SPIRALS, "data.noise": -1.0}, r"data.noise=-1.0 must be >= 0\."),
    # Learning-rate schedules: each checks its own options.
    (VAE, {"schedule.name": "exponential", "schedule.decay_rate": 0.0},
     r"schedule.decay_rate=0.0 must be > 0\."),
    (MLP, {"schedule.name": "exponential", "schedule.decay_rate": -0.5},
     r"schedule.decay_rate=-0.5 must be > 0\."),
    # Diagnostic schedules.
    (VAE, _diag("latent_space", every_steps=0),
     r"diagnostics.latent_space.every_steps=0 must be an integer >= 1\."),
    (VAE, _diag("latent_space", every_steps=2.5),
     r"diagnostics.latent_space.every_steps=2.5 must be an integer >= 1\."),
    (VAE, _diag("latent_space", schedule="every"),
     r"diagnostics.latent_space.every_steps=None must be an integer >= 1\. schedule='every' "
     r"needs it\."),
    (VAE, _diag("latent_space", schedule="weekly"),
     r"diagnostics.latent_space.schedule='weekly' must be one of 'every', 'log', 'end'\."),
    (VAE, _diag("latent_space", schedule="log", num_points=0),
     r"diagnostics.latent_space.num_points=0 must be an integer >= 1\."),
    (VAE, _diag("latent_space", schedule="log", every_steps=10),
     r"diagnostics.latent_space.every_steps=10 does nothing with schedule='log' \(only with "
     r"schedule='every'\)"),
    (VAE, _diag("latent_space", schedule="end", every_steps=10),
     r"every_steps=10 does nothing with schedule='end'"),
    (VAE, _diag("latent_space", every_steps=10, num_points=5),
     r"diagnostics.latent_space.num_points=5 does nothing with schedule='every' \(only with "
     r"schedule='log'\)"),
    (VAE, _diag("latent_space", schedule="end", num_points=5),
     r"num_points=5 does nothing with schedule='end'"),
    # Diagnostic options: each factory checks its own.
    (VAE, _diag("reconstructions", num=0),
     r"diagnostics.reconstructions.num=0 must be an integer in \[1, 256\]\. The probe holds 256"),
    (VAE, {**_diag("reconstructions", num=16), "probe_size": 8},
     r"diagnostics.reconstructions.num=16 must be an integer in \[1, 8\]\. The probe holds 8 "
     r"examples \(probe_size=8, test split of 360\)"),
    (VAE, {**_diag("reconstructions", num=361), "probe_size": 1000},
     r"diagnostics.reconstructions.num=361 must be an integer in \[1, 360\]"),
    (VAE, _diag("samples", num=0), r"diagnostics.samples.num=0 must be an integer >= 1\."),
    (VAE, _diag("samples", temperature=0.0),
     r"diagnostics.samples.temperature=0.0 must be > 0\."),
    (VAE, _diag("latent_traversal", num_dims=0),
     r"diagnostics.latent_traversal.num_dims=0 must be an integer >= 1\."),
    (VAE, _diag("latent_traversal", num_values=1),
     r"diagnostics.latent_traversal.num_values=1 must be an integer >= 2\."),
    (VAE, _diag("latent_traversal", span=0.0),
     r"diagnostics.latent_traversal.span=0.0 must be > 0\."),
    (VAE, _diag("jacobian", of="weights"),
     r"diagnostics.jacobian.of='weights' must be one of 'auto', 'decoder', 'encoder', 'model'"),
    (VAE, _diag("jacobian", mode="backward"),
     r"diagnostics.jacobian.mode='backward' must be one of 'auto', 'fwd', 'rev'\."),
    (VAE, _diag("jacobian", num=0), r"diagnostics.jacobian.num=0 must be an integer >= 1\."),
    (MLP, _diag("jacobian", of="decoder"),
     r"diagnostics.jacobian.of='decoder' needs a model with encode and decode"),
    (VAE, _diag("jacobian", of="model"),
     r"diagnostics.jacobian.of='model' needs a model whose __call__ returns one array; "
     r"model.name='mlp_vae' returns a tuple of 3 arrays \(a VAE's recon, mean, logvar\): use "
     r"of='decoder' or of='encoder'\."),
    (MLP, {**_diag("jacobian", of="model"), "model.name": f"{__name__}:NoisyLogits"},
     r"diagnostics.jacobian.of='model' cannot run on this model and data: InvalidRngError"),
    (VAE, _diag("hessian", k=0), r"diagnostics.hessian.k=0 must be an integer >= 1\."),
    (VAE, _diag("hessian", k=3, num_iters=2),
     r"diagnostics.hessian.num_iters=2 must be an integer >= 3\. Lanczos gives at most"),
    (VAE, _diag("hessian", trace_samples=1),
     r"diagnostics.hessian.trace_samples=1 must be an integer >= 2\. The Hutchinson"),
    (VAE, _diag("hessian", batch_size=0),
     r"diagnostics.hessian.batch_size=0 must be an integer >= 1\."),
    (MOONS, {**_diag("hessian", k=400, num_iters=400), "model.hidden": (4,)},
     r"diagnostics.hessian.k=400 must be an integer <= 22\. The model has 22 parameters: its "
     r"Hessian has 22 eigenvalues\."),
]


@pytest.mark.parametrize("path, overrides, message", CASES,
                         ids=[f"{p}-{','.join(f'{k}={v}' for k, v in o.items())}"
                              for p, o, _ in CASES])
def test_bad_option_is_refused_at_build_time(in_tmp, path, overrides, message):
  config = _config(path, overrides)
  with pytest.raises(ConfigError, match=message) as info:
    build_experiment(config)
  assert "\n" not in str(info.value)  # one line, as the CLI prints it
  assert list(in_tmp.iterdir()) == []  # nothing written


README_DIAGNOSTICS = {
    "jacobian": {"every_steps": 2000, "of": "decoder"},
    "hessian": {"schedule": "log", "num_points": 8, "k": 3},
    "latent_space": {"schedule": "end"},
}


@pytest.mark.parametrize("path, extra", [
    ("vae.py", {}),
    ("vae.py:conv", {}),
    ("vae.py:gaussian", {}),
    ("mlp.py", {}),
    ("mlp.py:moons", {}),
    ("cnn.py", {}),
    # The diagnostics the README and config comments show, and every one each family supports.
    ("vae.py", README_DIAGNOSTICS),
    ("vae.py:conv", {name: {"schedule": "end"} for name in (
        "reconstructions", "samples", "latent_space", "latent_traversal", "jacobian", "hessian",
        "weight_stats", "activation_stats")}),
    ("mlp.py:moons", {"jacobian": {"of": "model", "every_steps": 100},
                      "hessian": {"schedule": "log", "num_points": 3}, "activation_stats": {}}),
    ("cnn.py", {"jacobian": {"schedule": "end"}, "weight_stats": {"every_steps": 500}}),
])
def test_shipped_configs_and_their_diagnostics_build(in_tmp, path, extra):
  config = gmf_jax.load_config(str(CONFIGS / path))
  with config.diagnostics.unlocked():
    for name, entry in extra.items():
      config.diagnostics[name] = entry
  exp = build_experiment(config)
  assert [d.name for d in exp.diagnostics] == list(config.diagnostics)
  assert list(in_tmp.iterdir()) == []

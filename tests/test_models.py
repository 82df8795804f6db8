"""Each model: init and apply give the shapes its contract promises.

A shape is fixed by the trace, so where a test checks only shapes it traces the model
(`jax.eval_shape`) instead of computing it. What the contract ties together by value (a VAE's
`encode` against its `__call__`, the latent sample against the rng) is computed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmf_jax.models import MLPVAE, Autoencoder, CNNClassifier, ConvVAE, MLPClassifier

RNGS = {k: jax.random.PRNGKey(i) for i, k in enumerate(("params", "sample", "dropout"))}


def _init_apply(model, x, **kw):
  variables = model.init(RNGS, x, train=False)
  return variables, model.apply(variables, x, train=True, rngs=RNGS, **kw)


def _traced_init_apply(model, shape):
  """`_init_apply` on an input of `shape`, traced: every output's shape, nothing computed."""
  return jax.eval_shape(lambda x: _init_apply(model, x), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("cls", [MLPClassifier, CNNClassifier])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_classifier_logits_shape(cls, shape):
  _, logits = _traced_init_apply(cls(num_classes=7), (5, *shape))
  assert logits.shape == (5, 7)


def test_mlp_classifier_takes_points():
  _, logits = _traced_init_apply(MLPClassifier(num_classes=2, hidden=(16, 16)), (3, 2))
  assert logits.shape == (3, 2)


def _random_variables(model, x):
  """Variables of the shapes `model.init` gives (traced), drawn at random here: computing
  init's own draws op by op would cost most of this file's time, and no test reads them."""
  shapes = jax.eval_shape(lambda x: model.init(RNGS, x, train=False), x)
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape).astype(s.dtype)), shapes)


@pytest.mark.parametrize("cls", [MLPVAE, ConvVAE])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_vae_contract(cls, shape):
  model = cls(data_shape=shape, latent_dim=4)
  x = jnp.ones((3, *shape))
  variables = _random_variables(model, x)
  recon, mean, logvar = model.apply(variables, x, train=True, rngs=RNGS)
  assert recon.shape == x.shape
  assert mean.shape == logvar.shape == (3, 4)
  mean2, _ = model.apply(variables, x, method="encode")
  assert jnp.allclose(mean, mean2)
  decoded = jax.eval_shape(lambda z: model.apply(variables, z, method="decode"),
                           jax.ShapeDtypeStruct((6, 4), jnp.float32))
  assert decoded.shape == (6, *shape)


def test_vae_sample_depends_on_rng():
  model = MLPVAE(data_shape=(8, 8, 1), latent_dim=4)
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(RNGS, x)
  a = model.apply(variables, x, rngs={"sample": jax.random.PRNGKey(1)})[0]
  b = model.apply(variables, x, rngs={"sample": jax.random.PRNGKey(2)})[0]
  assert not jnp.allclose(a, b)


def test_autoencoder_contract():
  model = Autoencoder(data_shape=(8, 8, 1), latent_dim=3)

  def init_apply_encode(x):
    variables, recon = _init_apply(model, x)
    return recon, model.apply(variables, x, method="encode")

  recon, encoded = jax.eval_shape(init_apply_encode,
                                  jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32))
  assert recon.shape == (4, 8, 8, 1)
  assert encoded.shape == (4, 3)


def test_conv_vae_rejects_indivisible_images():
  with pytest.raises(ValueError, match="divisible"):
    ConvVAE(data_shape=(10, 10, 1), features=(8, 8, 8)).init(RNGS, jnp.ones((1, 10, 10, 1)))

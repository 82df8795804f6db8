"""Each model: init and apply give the shapes its contract promises."""

import jax
import jax.numpy as jnp
import pytest

from gmf_jax.models import MLPVAE, Autoencoder, CNNClassifier, ConvVAE, MLPClassifier

RNGS = {k: jax.random.PRNGKey(i) for i, k in enumerate(("params", "sample", "dropout"))}


def _init_apply(model, x, **kw):
  variables = model.init(RNGS, x, train=False)
  return variables, model.apply(variables, x, train=True, rngs=RNGS, **kw)


@pytest.mark.parametrize("cls", [MLPClassifier, CNNClassifier])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_classifier_logits_shape(cls, shape):
  _, logits = _init_apply(cls(num_classes=7), jnp.ones((5, *shape)))
  assert logits.shape == (5, 7)


def test_mlp_classifier_takes_points():
  _, logits = _init_apply(MLPClassifier(num_classes=2, hidden=(16, 16)), jnp.ones((3, 2)))
  assert logits.shape == (3, 2)


@pytest.mark.parametrize("cls", [MLPVAE, ConvVAE])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_vae_contract(cls, shape):
  model = cls(data_shape=shape, latent_dim=4)
  x = jnp.ones((3, *shape))
  variables, (recon, mean, logvar) = _init_apply(model, x)
  assert recon.shape == x.shape
  assert mean.shape == logvar.shape == (3, 4)
  mean2, _ = model.apply(variables, x, method="encode")
  assert jnp.allclose(mean, mean2)
  assert model.apply(variables, jnp.zeros((6, 4)), method="decode").shape == (6, *shape)


def test_vae_sample_depends_on_rng():
  model = MLPVAE(data_shape=(8, 8, 1), latent_dim=4)
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(RNGS, x)
  a = model.apply(variables, x, rngs={"sample": jax.random.PRNGKey(1)})[0]
  b = model.apply(variables, x, rngs={"sample": jax.random.PRNGKey(2)})[0]
  assert not jnp.allclose(a, b)


def test_autoencoder_contract():
  model = Autoencoder(data_shape=(8, 8, 1), latent_dim=3)
  x = jnp.ones((4, 8, 8, 1))
  variables, recon = _init_apply(model, x)
  assert recon.shape == x.shape
  assert model.apply(variables, x, method="encode").shape == (4, 3)


def test_conv_vae_rejects_indivisible_images():
  with pytest.raises(ValueError, match="divisible"):
    ConvVAE(data_shape=(10, 10, 1), features=(8, 8, 8)).init(RNGS, jnp.ones((1, 10, 10, 1)))

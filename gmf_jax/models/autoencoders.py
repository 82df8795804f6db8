"""VAEs and a deterministic autoencoder.

Contract (the `elbo` loss and the latent diagnostics rely on it):
  VAE:          __call__(x, train=False) -> (recon, mean, logvar); encode(x) -> (mean, logvar);
                decode(z) -> recon. `recon` has the shape of x: Bernoulli logits or Gaussian
                means. The latent sample uses the 'sample' rng stream.
  Autoencoder:  __call__(x, train=False) -> recon; encode(x) -> z; decode(z) -> recon.
`data_shape` (one example's shape) is filled in from the dataset when the config leaves it out.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gmf_jax.errors import ConfigError
from gmf_jax.models.layers import (
    MLP,
    activation,
    check_activation,
    check_data_shape,
    check_features,
    check_hidden,
    check_latent_dim,
)


def check_image_shape(data_shape, features) -> None:
  """ConvVAE's data: images (H, W, C) whose H and W each of the stride-2 layers can halve
  exactly, so the decoder's transposed convs give back H and W."""
  check_data_shape(data_shape)
  check_features(features)
  if len(data_shape) != 3:
    raise ConfigError(f"model.data_shape={tuple(data_shape)!r} must be an image shape (H, W, C) "
                      "for ConvVAE; use model.name='mlp_vae' for other data.")
  height, width, _ = data_shape
  factor = 2 ** len(features)
  if height % factor or width % factor:
    common = math.gcd(height, width)
    fits = (common & -common).bit_length() - 1  # the most halvings both H and W allow
    fix = (f"use at most {fits} entries in model.features" if fits else
           "no ConvVAE fits odd H or W: use model.name='mlp_vae' or pad the images")
    raise ConfigError(
        f"model.features={tuple(features)!r} has {len(features)} stride-2 layers, so ConvVAE "
        f"needs H and W divisible by {factor}; model.data_shape={tuple(data_shape)!r}: {fix}.")


def _check_dense_fields(module) -> None:
  """The fields MLPVAE and Autoencoder share."""
  check_data_shape(module.data_shape)
  check_latent_dim(module.latent_dim)
  check_hidden(module.hidden)  # () is allowed: a linear encoder and decoder
  check_activation(module.activation)


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + sigma * eps, differentiable in mean and logvar."""
  eps = jax.random.normal(rng, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


class MLPVAE(nn.Module):
  """A VAE with dense encoder and decoder and a diagonal Gaussian posterior (`hidden=()`: both
  linear)."""

  data_shape: tuple[int, ...]
  latent_dim: int = 8
  hidden: tuple[int, ...] = (256, 128)
  activation: str = "relu"

  def __post_init__(self):
    _check_dense_fields(self)
    super().__post_init__()

  def setup(self):
    self.encoder = MLP(self.hidden, self.activation)
    self.to_mean = nn.Dense(self.latent_dim)
    self.to_logvar = nn.Dense(self.latent_dim)
    self.decoder = MLP(tuple(reversed(self.hidden)), self.activation)
    self.to_recon = nn.Dense(math.prod(self.data_shape))

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = self.encoder(x.reshape((x.shape[0], -1)))  # (B, hidden[-1])
    return self.to_mean(h), self.to_logvar(h)  # (B, L), (B, L)

  def decode(self, z: jax.Array) -> jax.Array:
    out = self.to_recon(self.decoder(z))  # (B, prod(data_shape))
    return out.reshape((z.shape[0], *self.data_shape))

  def __call__(self, x: jax.Array, train: bool = False):
    mean, logvar = self.encode(x)
    z = reparameterize(self.make_rng("sample"), mean, logvar)
    return self.decode(z), mean, logvar


class ConvEncoder(nn.Module):
  features: tuple[int, ...]
  activation: str

  def __post_init__(self):
    check_features(self.features)
    check_activation(self.activation)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activation(self.activation)
    for i, width in enumerate(self.features):
      x = act(nn.Conv(width, (3, 3), strides=(2, 2), name=f"conv_{i}")(x))  # halves H, W
    return x.reshape((x.shape[0], -1))


class ConvDecoder(nn.Module):
  data_shape: tuple[int, ...]
  features: tuple[int, ...]
  activation: str

  def __post_init__(self):
    check_image_shape(self.data_shape, self.features)
    check_activation(self.activation)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = activation(self.activation)
    height, width, channels = self.data_shape
    factor = 2 ** len(self.features)
    h0, w0 = height // factor, width // factor
    x = act(nn.Dense(h0 * w0 * self.features[-1], name="project")(z))
    x = x.reshape((z.shape[0], h0, w0, self.features[-1]))  # (B, H/f, W/f, C_last)
    for i, feat in enumerate(reversed(self.features)):
      x = act(nn.ConvTranspose(feat, (3, 3), strides=(2, 2), name=f"deconv_{i}")(x))
    return nn.Conv(channels, (3, 3), name="to_recon")(x)  # (B, H, W, C)


class ConvVAE(nn.Module):
  """A VAE with strided-conv encoder and transposed-conv decoder, for images (H, W, C)."""

  data_shape: tuple[int, ...]
  latent_dim: int = 8
  features: tuple[int, ...] = (32, 64)
  activation: str = "relu"

  def __post_init__(self):
    check_image_shape(self.data_shape, self.features)
    check_latent_dim(self.latent_dim)
    check_activation(self.activation)
    super().__post_init__()

  def setup(self):
    self.encoder = ConvEncoder(self.features, self.activation)
    self.to_mean = nn.Dense(self.latent_dim)
    self.to_logvar = nn.Dense(self.latent_dim)
    self.decoder = ConvDecoder(tuple(self.data_shape), self.features, self.activation)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = self.encoder(x)
    return self.to_mean(h), self.to_logvar(h)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)

  def __call__(self, x: jax.Array, train: bool = False):
    mean, logvar = self.encode(x)
    z = reparameterize(self.make_rng("sample"), mean, logvar)
    return self.decode(z), mean, logvar


class Autoencoder(nn.Module):
  """A deterministic autoencoder with dense encoder and decoder (`hidden=()`: both linear, as in
  PCA)."""

  data_shape: tuple[int, ...]
  latent_dim: int = 8
  hidden: tuple[int, ...] = (256, 128)
  activation: str = "relu"

  def __post_init__(self):
    _check_dense_fields(self)
    super().__post_init__()

  def setup(self):
    self.encoder = MLP(self.hidden, self.activation)
    self.to_latent = nn.Dense(self.latent_dim)
    self.decoder = MLP(tuple(reversed(self.hidden)), self.activation)
    self.to_recon = nn.Dense(math.prod(self.data_shape))

  def encode(self, x: jax.Array) -> jax.Array:
    return self.to_latent(self.encoder(x.reshape((x.shape[0], -1))))  # (B, L)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.to_recon(self.decoder(z)).reshape((z.shape[0], *self.data_shape))

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.decode(self.encode(x))


def likelihood_mean(likelihood: str, output: jax.Array) -> jax.Array:
  """Decoder output -> the mean of p(x | z): sigmoid of Bernoulli logits, Gaussian means as is."""
  return jax.nn.sigmoid(output) if likelihood == "bernoulli" else output

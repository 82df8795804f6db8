"""Losses. Each is a small frozen dataclass; its fields come from `config.loss`.

Contract: `loss(params, apply_fn, batch, rng, train) -> (scalar loss, {name: scalar})` for
training, and `loss.per_example(params, apply_fn, batch, rng) -> {name: (B,)}` for evaluation,
so the evaluator can average exactly over a test set of any size. `check_output` says, before
training, whether a model's output fits the loss.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gmf_jax.checks import check_choice, check_number
from gmf_jax.models.autoencoders import likelihood_mean
from gmf_jax.models.rngs import model_rngs
from gmf_jax.registry import ComponentOptions, resolve
from gmf_jax.train import hparams

LIKELIHOODS = ("bernoulli", "gaussian")


def _sum_over_example(values: jax.Array) -> jax.Array:
  return values.reshape((values.shape[0], -1)).sum(-1)  # (B,)


def _neg_log_likelihood(likelihood: str, recon: jax.Array, x: jax.Array, sigma: float):
  """-log p(x | recon) per example, in nats. (B, ...) -> (B,)"""
  if likelihood == "bernoulli":  # recon holds logits
    return _sum_over_example(optax.sigmoid_binary_cross_entropy(recon, x))
  sq = jnp.square((x - recon) / sigma)
  return _sum_over_example(0.5 * sq + jnp.log(sigma) + 0.5 * math.log(2 * math.pi))


def _check_likelihood(likelihood: str, obs_sigma: float) -> None:
  check_choice("loss.likelihood", likelihood, LIKELIHOODS)
  check_number("loss.obs_sigma", obs_sigma, low=0, low_open=True,
               hint="It is the Gaussian likelihood's standard deviation.")


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
  """Softmax cross-entropy for classifiers; reports accuracy."""

  label_smoothing: float = 0.0

  def __post_init__(self):
    check_number("loss.label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)

  def _per_example(self, logits, labels):
    if not hparams.is_off(self.label_smoothing):
      targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]),
                                    self.label_smoothing)
      loss = optax.softmax_cross_entropy(logits, targets)  # (B,)
    else:  # no one-hot matrix: fewer ops per step, which small models feel
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # (B,)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)  # (B,)
    return {"loss": loss, "accuracy": correct}

  def __call__(self, params, apply_fn, batch, rng, train=True):
    logits = apply_fn({"params": params}, batch["x"], train=train, rngs=model_rngs(rng))
    per = self._per_example(logits, batch["y"])
    loss = per["loss"].mean()
    return loss, {"accuracy": per["accuracy"].mean()}

  def per_example(self, params, apply_fn, batch, rng):
    logits = apply_fn({"params": params}, batch["x"], train=False, rngs=model_rngs(rng))
    return self._per_example(logits, batch["y"])

  def check_output(self, output, example_shape, num_classes) -> str | None:
    if not hasattr(output, "shape") or output.ndim != 2:
      return "expects __call__(x, train) to return logits of shape (B, num_classes)"
    if num_classes is not None and output.shape[-1] != num_classes:
      return f"got {output.shape[-1]} logits for {num_classes} classes"
    return None


@dataclasses.dataclass(frozen=True)
class ELBO:
  """The negative evidence lower bound of a VAE, in nats per example.

  Training minimises recon + beta * KL (beta-VAE); evaluation reports `nelbo` with beta = 1,
  so it is a bound on -log p(x) whatever beta was trained with.
  """

  beta: float = 1.0
  likelihood: str = "bernoulli"  # 'bernoulli' (decoder gives logits) or 'gaussian' (means)
  obs_sigma: float = 0.1  # the Gaussian likelihood's fixed standard deviation

  def __post_init__(self):
    check_number("loss.beta", self.beta, low=0, hint="1 is the ELBO; > 1 a beta-VAE.")
    _check_likelihood(self.likelihood, self.obs_sigma)

  def _terms(self, params, apply_fn, batch, rng, train):
    recon, mean, logvar = apply_fn({"params": params}, batch["x"], train=train,
                                   rngs=model_rngs(rng))
    nll = _neg_log_likelihood(self.likelihood, recon, batch["x"], self.obs_sigma)  # (B,)
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)  # (B,)
    return nll, kl

  def __call__(self, params, apply_fn, batch, rng, train=True):
    nll, kl = self._terms(params, apply_fn, batch, rng, train)
    loss = jnp.mean(nll + self.beta * kl)
    return loss, {"nelbo": jnp.mean(nll + kl), "recon": nll.mean(), "kl": kl.mean()}

  def per_example(self, params, apply_fn, batch, rng):
    nll, kl = self._terms(params, apply_fn, batch, rng, False)
    return {"nelbo": nll + kl, "recon": nll, "kl": kl, "loss": nll + self.beta * kl}

  def check_output(self, output, example_shape, num_classes) -> str | None:
    ok = isinstance(output, tuple) and len(output) == 3
    if not ok or tuple(output[0].shape[1:]) != tuple(example_shape):
      return (
          "expects __call__(x, train) to return (recon with the shape of x, mean, logvar), "
          "using the 'sample' rng stream"
      )
    if output[1].shape != output[2].shape:
      return f"mean {output[1].shape} and logvar {output[2].shape} differ in shape"
    return None


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """-log p(x | decode(encode(x))) for a deterministic autoencoder, in nats per example."""

  likelihood: str = "bernoulli"
  obs_sigma: float = 0.1

  def __post_init__(self):
    _check_likelihood(self.likelihood, self.obs_sigma)

  def per_example(self, params, apply_fn, batch, rng):
    recon = apply_fn({"params": params}, batch["x"], train=False, rngs=model_rngs(rng))
    nll = _neg_log_likelihood(self.likelihood, recon, batch["x"], self.obs_sigma)
    mean = likelihood_mean(self.likelihood, recon)
    return {"loss": nll, "mse": _sum_over_example(jnp.square(mean - batch["x"]))}

  def __call__(self, params, apply_fn, batch, rng, train=True):
    recon = apply_fn({"params": params}, batch["x"], train=train, rngs=model_rngs(rng))
    nll = _neg_log_likelihood(self.likelihood, recon, batch["x"], self.obs_sigma)
    return nll.mean(), {}

  def check_output(self, output, example_shape, num_classes) -> str | None:
    if not hasattr(output, "shape") or tuple(output.shape[1:]) != tuple(example_shape):
      return "expects __call__(x, train) to return a reconstruction with the shape of x"
    return None


def loss_values(loss) -> dict[str, Any]:
  """The loss's data values by config key: its float fields (see gmf_jax.train.hparams)."""
  if not dataclasses.is_dataclass(loss):
    return {}
  found = {f"loss.{f.name}": getattr(loss, f.name) for f in dataclasses.fields(loss)}
  return {k: v for k, v in found.items() if hparams.is_data(k, v)}


def with_values(loss, values: Mapping[str, Any]):
  """The loss with its data fields taken from `values` (arrays inside the compiled step, where
  the build-time checks of `__post_init__` do not run again)."""
  changes = {k[len("loss."):]: v for k, v in values.items() if k.startswith("loss.")}
  if not changes:
    return loss
  bound = copy.copy(loss)
  for name, value in changes.items():
    object.__setattr__(bound, name, value)
  return bound


LOSSES = {"cross_entropy": CrossEntropy, "elbo": ELBO, "reconstruction": Reconstruction}


def make_loss(loss_config: Mapping[str, Any], options: ComponentOptions | None = None):
  """Builds `loss_config.name` with the other keys as its fields (each loss checks its ranges).

  Args:
    loss_config: `config.loss`.
    options: splits the section into the chosen loss's fields (see
      `gmf_jax.registry.ComponentOptions`); default: every set key must be a field.
  """
  loss_config = dict(loss_config)
  name = loss_config.pop("name")
  cls = resolve(name, LOSSES, key="loss.name")
  options = options or ComponentOptions()
  return cls(**options.take("loss", loss_config, cls, name=name))

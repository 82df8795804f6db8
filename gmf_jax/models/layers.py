"""Small pieces shared by the model families, and the checks their fields share."""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax

from gmf_jax.checks import check_choice, check_int, check_ints, check_number
from gmf_jax.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": nn.tanh,
    "elu": nn.elu,
    "softplus": nn.softplus,
    "leaky_relu": nn.leaky_relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation function called `name`; a ConfigError lists the valid names."""
  if name not in ACTIVATIONS:
    raise ConfigError(
        f"model.activation={name!r} is unknown; valid names: {', '.join(sorted(ACTIVATIONS))}."
    )
  return ACTIVATIONS[name]


# Field checks, called from each Module's __post_init__ so a bad value refuses construction
# (in `make_model`, at build time) instead of failing when the model is first traced. Flax runs
# __post_init__ again on every clone it makes during init/apply, so these stay cheap and pure.
# The keys are `model.<field>`: the config section the fields come from.


def check_activation(name: str) -> None:
  check_choice("model.activation", name, sorted(ACTIVATIONS))


def check_hidden(hidden) -> None:
  """Widths of dense layers; empty is allowed and means no hidden layer (a linear map)."""
  check_ints("model.hidden", hidden, low=1)


def check_features(features) -> None:
  """Channels of conv layers; at least one layer (a model without any is an MLP)."""
  check_ints("model.features", features, low=1, nonempty=True)


def check_latent_dim(latent_dim) -> None:
  check_int("model.latent_dim", latent_dim, low=1)


def check_dropout_rate(rate) -> None:
  """In [0, 1): a rate of 1 drops every unit (and flax divides by 1 - rate)."""
  check_number("model.dropout_rate", rate, low=0, high=1, high_open=True)


def check_num_classes(num_classes) -> None:
  """At least 2: a softmax over one class is always 1, so a classifier of one class learns
  nothing. The value is filled in from the data when the config leaves it out."""
  check_int("model.num_classes", num_classes, low=2,
            hint="A softmax over one class learns nothing; the value comes from the data when "
            "model.num_classes is not set.")


def check_data_shape(data_shape) -> None:
  """One example's shape, e.g. (28, 28, 1) or (2,); filled in from the data when not set."""
  check_ints("model.data_shape", data_shape, low=1, nonempty=True)


class MLP(nn.Module):
  """Dense layers with an activation after each: (B, D) -> (B, hidden[-1]); no layers when
  `hidden` is empty (the input passes through)."""

  hidden: tuple[int, ...]
  activation: str = "relu"

  def __post_init__(self):
    check_hidden(self.hidden)
    check_activation(self.activation)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activation(self.activation)
    for i, width in enumerate(self.hidden):
      x = act(nn.Dense(width, name=f"dense_{i}")(x))
    return x


NORMS = ("none", "batch", "layer", "group")
BATCH_NORM_MOMENTUM = 0.9  # the running statistics' decay per step (PyTorch's 0.1 momentum)
GROUP_NORM_GROUPS = 8


def check_norm(norm: str) -> None:
  check_choice("model.norm", norm, NORMS)


def norm_layer(norm: str, x: jax.Array, train: bool, name: str) -> jax.Array:
  """`x` normalized by the layer `norm` names ('none' returns it as it is).

  - 'batch': BatchNorm over the batch and spatial axes; in training it normalizes with the
    batch's statistics and updates its running averages (the `batch_stats` collection), in
    evaluation it uses those averages. Its output keeps the input's dtype (mixed precision).
  - 'layer': LayerNorm over the features of each example.
  - 'group': GroupNorm with gcd(channels, 8) groups.
  """
  if norm == "none":
    return x
  if norm == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM,
                        epsilon=1e-5, dtype=x.dtype, name=name)(x)
  if norm == "layer":
    return nn.LayerNorm(dtype=x.dtype, name=name)(x)
  groups = math.gcd(x.shape[-1], GROUP_NORM_GROUPS)
  return nn.GroupNorm(num_groups=groups, dtype=x.dtype, name=name)(x)

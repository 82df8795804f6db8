"""Small pieces shared by the model families."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

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


class MLP(nn.Module):
  """Dense layers with an activation after each: (B, D) -> (B, hidden[-1])."""

  hidden: tuple[int, ...]
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activation(self.activation)
    for i, width in enumerate(self.hidden):
      x = act(nn.Dense(width, name=f"dense_{i}")(x))
    return x

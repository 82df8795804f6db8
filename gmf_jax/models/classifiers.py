"""Classifiers: `__call__(x, train=False) -> logits (B, num_classes)`."""

from __future__ import annotations

import flax.linen as nn
import jax

from gmf_jax.checks import check_int
from gmf_jax.models.layers import (
    activation,
    check_activation,
    check_dropout_rate,
    check_features,
    check_hidden,
    check_norm,
    check_num_classes,
    norm_layer,
)


class MLPClassifier(nn.Module):
  """Flattens the input, then dense layers and a linear read-out (`hidden=()`: a linear model,
  multinomial logistic regression)."""

  num_classes: int
  hidden: tuple[int, ...] = (64,)
  activation: str = "relu"
  dropout_rate: float = 0.0  # applied after each hidden layer when train=True

  def __post_init__(self):
    check_num_classes(self.num_classes)
    check_hidden(self.hidden)
    check_activation(self.activation)
    check_dropout_rate(self.dropout_rate)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape((x.shape[0], -1))  # (B, D)
    act = activation(self.activation)
    for i, width in enumerate(self.hidden):
      x = act(nn.Dense(width, name=f"dense_{i}")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="logits")(x)  # (B, num_classes)


class CNNClassifier(nn.Module):
  """Conv blocks (conv, normalization, activation, 2x2 average pool), then a dense layer and a
  read-out. `norm`: 'none' | 'batch' (BatchNorm, with running statistics in `batch_stats`) |
  'layer' | 'group' (see gmf_jax.models.layers.norm_layer)."""

  num_classes: int
  features: tuple[int, ...] = (32, 64)
  dense: int = 128
  kernel_size: int = 3
  activation: str = "relu"
  dropout_rate: float = 0.0
  norm: str = "none"

  def __post_init__(self):
    check_num_classes(self.num_classes)
    check_features(self.features)
    check_norm(self.norm)
    check_int("model.dense", self.dense, low=1)
    check_int("model.kernel_size", self.kernel_size, low=1)
    check_activation(self.activation)
    check_dropout_rate(self.dropout_rate)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"CNNClassifier needs images (B, H, W, C); got shape {x.shape}.")
    act = activation(self.activation)
    k = (self.kernel_size, self.kernel_size)
    for i, width in enumerate(self.features):
      x = nn.Conv(width, k, use_bias=self.norm == "none", name=f"conv_{i}")(x)
      x = act(norm_layer(self.norm, x, train, name=f"norm_{i}"))
      if min(x.shape[1:3]) >= 2:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # (B, H/2, W/2, width)
    x = x.reshape((x.shape[0], -1))
    x = act(nn.Dense(self.dense, name="dense")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="logits")(x)  # (B, num_classes)

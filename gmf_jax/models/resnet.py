"""A small CIFAR-style ResNet (He et al. 2016, section 4.2): `__call__(x, train=False) -> logits`.

Depth 6n + 2 (8, 14 or 20): a 3x3 convolution, three stages of n basic blocks (two 3x3
convolutions, each followed by normalization, with an identity shortcut, or a 1x1 convolution
where the shape changes) of `width`, 2 `width` and 4 `width` channels, the last two starting
with stride 2, then global average pooling and a linear read-out. Normalization is BatchNorm by
default (running statistics in the `batch_stats` collection). Runs on the 8x8 built-in digits
(down to 2x2 in the last stage) and on 32x32x3 images.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from gmf_jax.checks import check_choice, check_int
from gmf_jax.models.layers import (
    activation,
    check_activation,
    check_norm,
    check_num_classes,
    norm_layer,
)

DEPTHS = (8, 14, 20)


class ResNet(nn.Module):
  num_classes: int
  depth: int = 8
  width: int = 16
  norm: str = "batch"
  activation: str = "relu"

  def __post_init__(self):
    check_num_classes(self.num_classes)
    check_choice("model.depth", self.depth, DEPTHS)
    check_int("model.width", self.width, low=1)
    check_norm(self.norm)
    check_activation(self.activation)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"ResNet needs images (B, H, W, C); got shape {x.shape}.")
    act = activation(self.activation)
    bias = self.norm == "none"
    x = nn.Conv(self.width, (3, 3), use_bias=bias, name="stem")(x)
    x = act(norm_layer(self.norm, x, train, name="stem_norm"))
    blocks = (self.depth - 2) // 6
    for stage in range(3):
      width = self.width * 2**stage
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        name = f"stage{stage}_block{block}"
        y = nn.Conv(width, (3, 3), strides=stride, use_bias=bias, name=f"{name}_conv0")(x)
        y = act(norm_layer(self.norm, y, train, name=f"{name}_norm0"))
        y = nn.Conv(width, (3, 3), use_bias=bias, name=f"{name}_conv1")(y)
        y = norm_layer(self.norm, y, train, name=f"{name}_norm1")
        if stride != 1 or x.shape[-1] != width:
          x = nn.Conv(width, (1, 1), strides=stride, use_bias=bias, name=f"{name}_shortcut")(x)
          x = norm_layer(self.norm, x, train, name=f"{name}_shortcut_norm")
        x = act(x + y)
    x = x.mean(axis=(1, 2))  # (B, 4 width)
    return nn.Dense(self.num_classes, name="logits")(x)  # (B, num_classes)

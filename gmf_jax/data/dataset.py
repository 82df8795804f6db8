"""The dataset contract: two random-access splits of examples `{'x': input, 'y': label}`."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


class Split(Protocol):
  """Random access to the examples of one split."""

  def __len__(self) -> int: ...

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Returns `{'x': (len(indices), *example_shape) float32, 'y': (len(indices),) int32}`."""
    ...


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """A split held in host memory as arrays with a leading example axis."""

  arrays: dict[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.arrays["x"])

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self.arrays.items()}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What a data loader returns.

  Attributes:
    name: the config name it was loaded from.
    train: the training split.
    test: the split evaluated on `eval_every_steps` and at the end.
    example_shape: the shape of one input, e.g. (8, 8, 1) for images or (2,) for points.
    num_classes: the number of label values, or None when there are no labels.
    kind: 'image' (values in [0, 1], shape (H, W, C)) or 'points' (real vectors).
  """

  name: str
  train: Split
  test: Split
  example_shape: tuple[int, ...]
  num_classes: int | None
  kind: str = "image"


def materialize(split: Split, chunk: int = 8192) -> dict[str, np.ndarray]:
  """Reads a whole split into host arrays."""
  if isinstance(split, ArraySplit):
    return split.arrays
  parts = [split.get(np.arange(i, min(i + chunk, len(split)))) for i in range(0, len(split), chunk)]
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

"""The built-in offline dataset: scikit-learn's 8x8 handwritten digits, shipped in the package."""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np

from gmf_jax.data.dataset import ArraySplit, Dataset


@functools.cache
def _arrays() -> dict[str, np.ndarray]:
  with importlib.resources.files("gmf_jax.data").joinpath("assets/digits.npz").open("rb") as f:
    with np.load(f) as npz:
      return {k: npz[k] for k in npz.files}


def load_digits() -> Dataset:
  """1,797 8x8 grey images of digits 0-9 (1,437 train / 360 test, a fixed split).

  Pixels are scaled from 0..16 to [0, 1]; images have shape (8, 8, 1).
  """
  raw = _arrays()

  def split(prefix: str) -> ArraySplit:
    x = (raw[f"{prefix}_x"].astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1)
    return ArraySplit({"x": x, "y": raw[f"{prefix}_y"].astype(np.int32)})

  return Dataset("digits", split("train"), split("test"), (8, 8, 1), num_classes=10)

"""Synthetic 2-D datasets for fast analysis work; fixed by `data_seed`, not by the run's seed.

Keeping the data fixed across training seeds makes multi-seed ensembles comparable. Each loader
checks its options (`data.<option>` in the config) before sampling anything.
"""

from __future__ import annotations

import numpy as np

from gmf_jax.checks import check_int, check_number
from gmf_jax.data.dataset import ArraySplit, Dataset


def _check_sizes(num_train, num_test, data_seed) -> None:
  """The options every synthetic set shares."""
  check_int("data.num_train", num_train, low=1)
  check_int("data.num_test", num_test, low=1)  # the test split also holds the diagnostics' probe
  check_int("data.data_seed", data_seed, low=0)  # numpy seeds must be >= 0


def _make(name, sample, num_train, num_test, data_seed, num_classes) -> Dataset:
  rng = np.random.default_rng(data_seed)
  x, y = sample(rng, num_train + num_test)
  x = x.astype(np.float32)
  y = y.astype(np.int32)
  train = ArraySplit({"x": x[:num_train], "y": y[:num_train]})
  test = ArraySplit({"x": x[num_train:], "y": y[num_train:]})
  return Dataset(name, train, test, (2,), num_classes=num_classes, kind="points")


def load_moons(num_train: int = 2000, num_test: int = 500, noise: float = 0.1,
               data_seed: int = 0) -> Dataset:
  """Two interleaving half circles, labelled 0 and 1."""
  _check_sizes(num_train, num_test, data_seed)
  check_number("data.noise", noise, low=0)

  def sample(rng, n):
    y = rng.integers(0, 2, n)
    t = rng.uniform(0.0, np.pi, n)
    outer = np.stack([np.cos(t), np.sin(t)], -1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1)
    x = np.where(y[:, None] == 0, outer, inner) + noise * rng.standard_normal((n, 2))
    return x, y

  return _make("moons", sample, num_train, num_test, data_seed, 2)


def load_gaussian_mixture(num_train: int = 2000, num_test: int = 500, num_components: int = 8,
                          radius: float = 2.0, std: float = 0.2, data_seed: int = 0) -> Dataset:
  """Isotropic Gaussians with centres evenly spaced on a circle, labelled by component."""
  _check_sizes(num_train, num_test, data_seed)
  check_int("data.num_components", num_components, low=1)
  check_number("data.radius", radius, low=0, low_open=True)  # 0: one blob, labels by chance
  check_number("data.std", std, low=0)

  def sample(rng, n):
    y = rng.integers(0, num_components, n)
    angle = 2.0 * np.pi * y / num_components
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
    return centres + std * rng.standard_normal((n, 2)), y

  return _make("gaussian_mixture", sample, num_train, num_test, data_seed, num_components)


def load_spirals(num_train: int = 2000, num_test: int = 500, num_arms: int = 2,
                 noise: float = 0.05, turns: float = 1.5, data_seed: int = 0) -> Dataset:
  """Interleaved spiral arms, labelled by arm."""
  _check_sizes(num_train, num_test, data_seed)
  check_int("data.num_arms", num_arms, low=1)
  check_number("data.noise", noise, low=0)
  check_number("data.turns", turns, low=0, low_open=True)  # 0: straight rays, no spiral

  def sample(rng, n):
    y = rng.integers(0, num_arms, n)
    r = np.sqrt(rng.uniform(0.0, 1.0, n))  # (n,) uniform density along the arm's area
    theta = 2.0 * np.pi * (turns * r + y / num_arms)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], -1)
    return x + noise * rng.standard_normal((n, 2)), y

  return _make("spirals", sample, num_train, num_test, data_seed, num_arms)

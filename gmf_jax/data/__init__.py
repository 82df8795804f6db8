"""Datasets by name: built-in digits, synthetic 2-D sets, and any prepared tfds dataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gmf_jax.data.dataset import ArraySplit, Dataset, Split, materialize
from gmf_jax.data.digits import load_digits
from gmf_jax.data.synthetic import load_gaussian_mixture, load_moons, load_spirals
from gmf_jax.data.tfds_source import load_tfds
from gmf_jax.errors import ConfigError
from gmf_jax.registry import ComponentOptions, resolve

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "moons": load_moons,
    "gaussian_mixture": load_gaussian_mixture,
    "spirals": load_spirals,
}

# Keys of `config.data` that the pipeline reads; the rest go to the loader.
PIPELINE_KEYS = ("name", "on_device", "max_device_bytes", "binarize", "workers", "prefetch",
                 "augment")


def make_dataset(data_config: Mapping[str, Any],
                 options: ComponentOptions | None = None) -> Dataset:
  """Builds the dataset named by `data_config.name`, passing it the other keys.

  Names: a built-in (see DATASETS), `tfds:<name>` for a prepared tfds dataset, or a user's
  `my_pkg.my_data:load` / `file.py:load` returning a `gmf_jax.data.Dataset`. Each loader
  checks its own options.

  Args:
    data_config: `config.data`.
    options: splits the section into the chosen loader's options (see
      `gmf_jax.registry.ComponentOptions`); default: every set key must be an option.
  """
  options = options or ComponentOptions()
  data_config = dict(data_config)
  name = data_config["name"]
  kwargs = {k: v for k, v in data_config.items() if k not in PIPELINE_KEYS}
  if isinstance(name, str) and name.startswith("tfds:"):
    dataset = load_tfds(name[len("tfds:") :], **options.take("data", kwargs, load_tfds, name=name))
  else:
    loader = resolve(name, {**DATASETS, "tfds:<name>": None}, key="data.name")
    if loader is None:
      raise ConfigError("data.name='tfds:<name>' needs a real name, e.g. 'tfds:mnist'.")
    dataset = loader(**options.take("data", kwargs, loader, name=name))
  if not isinstance(dataset, Dataset):
    raise ConfigError(f"data.name={name!r} returned {type(dataset).__name__}, not a Dataset.")
  if data_config.get("binarize"):
    if dataset.kind != "image":
      raise ConfigError(f"data.binarize=True needs image data; {name!r} holds {dataset.kind}.")
    dataset = _binarized(dataset)
  return dataset


def _binarized(dataset: Dataset) -> Dataset:
  import dataclasses

  def binarize(split: Split) -> Split:
    return _BinarizedSplit(split)

  return dataclasses.replace(dataset, train=binarize(dataset.train), test=binarize(dataset.test))


class _BinarizedSplit:
  """Thresholds pixel values at 0.5, so a Bernoulli likelihood is a true likelihood."""

  def __init__(self, split: Split):
    self.split = split

  def __len__(self) -> int:
    return len(self.split)

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    batch = dict(self.split.get(indices))
    batch["x"] = (batch["x"] > 0.5).astype(np.float32)
    return batch


__all__ = ["DATASETS", "ArraySplit", "Dataset", "Split", "make_dataset", "materialize"]

"""Models by name. A model is a flax linen Module; see each family's module for its contract."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from gmf_jax.data.dataset import Dataset
from gmf_jax.errors import ConfigError
from gmf_jax.models.autoencoders import MLPVAE, Autoencoder, ConvVAE
from gmf_jax.models.classifiers import CNNClassifier, MLPClassifier
from gmf_jax.models.resnet import ResNet
from gmf_jax.registry import ComponentOptions, resolve

MODELS: dict[str, type[nn.Module]] = {
    "mlp_classifier": MLPClassifier,
    "cnn_classifier": CNNClassifier,
    "mlp_vae": MLPVAE,
    "conv_vae": ConvVAE,
    "autoencoder": Autoencoder,
    "resnet": ResNet,
}


def make_model(model_config: Mapping[str, Any], dataset: Dataset,
               options: ComponentOptions | None = None) -> nn.Module:
  """Builds `model_config.name` with the other keys as its fields.

  Fields the config leaves out but the dataset knows are filled in: `data_shape` (one example's
  shape) and `num_classes`. A user model is named `my_pkg.my_models:MyVAE` or `file.py:MyVAE`.
  `options` splits the section into the chosen model's fields (see
  `gmf_jax.registry.ComponentOptions`); by default every set key must be a field.

  Raises:
    ConfigError: an unknown name or field, a missing field, or a value the model's own checks
      refuse when it is constructed (each built-in checks its fields in `__post_init__`).
  """
  model_config = dict(model_config)
  name = model_config.pop("name")
  cls = resolve(name, MODELS, key="model.name")
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ConfigError(f"model.name={name!r} is {cls!r}, not a flax linen Module class.")
  kwargs = (options or ComponentOptions()).take("model", model_config, cls, name=name)
  fields = {f.name for f in dataclasses.fields(cls)}
  from_data = {"data_shape": tuple(dataset.example_shape), "num_classes": dataset.num_classes}
  for field, value in from_data.items():
    if field in fields and field not in kwargs:
      if value is None:
        raise ConfigError(f"model {name!r} needs {field}, but data {dataset.name!r} has none.")
      kwargs[field] = value
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  try:
    return cls(**kwargs)  # a ConfigError from the model's own field checks passes through
  except TypeError as e:  # a required field missing
    raise ConfigError(f"model.name={name!r}: {e}. Set it as model.<field> in the config.") from e


__all__ = [
    "MLPVAE",
    "MODELS",
    "Autoencoder",
    "CNNClassifier",
    "ConvVAE",
    "MLPClassifier",
    "ResNet",
    "make_model",
]

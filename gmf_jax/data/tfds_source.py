"""Any prepared tfds dataset, read with `tfds.data_source` (random access, no TensorFlow)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

import numpy as np

from gmf_jax.data.dataset import Dataset
from gmf_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """One split of a tfds data source, returning `{'x', 'y'}` batches by index."""

  source: Any  # a tfds random-access data source, or any sequence of records
  image_key: str
  label_key: str | None
  scale: float  # divide integer pixels by this

  def __len__(self) -> int:
    return len(self.source)

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    keys = [int(i) for i in indices]
    # tfds sources read a batch in one call (`__getitems__`, the protocol PyTorch and Grain use);
    # any other random-access sequence (a list, a user's source) is read item by item. Chosen by
    # what the source offers, so an error raised while decoding a record always propagates.
    read_batch = getattr(self.source, "__getitems__", None)
    records = read_batch(keys) if read_batch is not None else [self.source[k] for k in keys]
    x = np.stack([np.asarray(r[self.image_key]) for r in records]).astype(np.float32)
    if self.scale != 1.0:
      x /= self.scale
    out = {"x": x}
    if self.label_key is not None:
      out["y"] = np.asarray([r[self.label_key] for r in records], dtype=np.int32)
    else:
      out["y"] = np.zeros(len(records), np.int32)
    return out


@contextlib.contextmanager
def _quiet_absl():
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def load_tfds(name: str, data_dir: str | None = None, train_split: str = "train",
              test_split: str = "test", image_key: str = "image",
              label_key: str | None = "label") -> Dataset:
  """Opens a tfds dataset prepared in `array_record` format under `data_dir`.

  Integer images are scaled to [0, 1]. Nothing is downloaded: without a network a missing
  dataset raises a ConfigError that says how to prepare it.
  """
  import tensorflow_datasets as tfds  # slow import; only when a tfds dataset is used

  key = f"data.name='tfds:{name}'"
  with _quiet_absl():  # probing an unprepared folder logs warnings we replace with advice
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise ConfigError(
          f"{key}: tfds has no dataset {name!r}; see the tfds catalog for names."
      ) from None
    prepared = builder.is_prepared()
    if prepared:  # name a wrong split before reading anything
      splits = sorted(builder.info.splits.keys())
      for split_key, split in (("train_split", train_split), ("test_split", test_split)):
        if split.split("[")[0] not in splits:
          raise ConfigError(f"data.{split_key}={split!r}: {name} has splits {splits}.")
    try:
      sources = {split: tfds.data_source(name, split=split, data_dir=data_dir, download=False)
                 for split in (train_split, test_split)}
    except Exception as e:  # noqa: BLE001 - replaced by advice on how to prepare the data
      problem = "is not prepared" if not prepared else f"cannot be read ({type(e).__name__}: {e})"
      raise ConfigError(
          f"{key}: the dataset {problem} at {builder.data_dir}. With network access, prepare "
          f"it once in array_record format: `pip install tensorflow && tfds build {name} "
          f"--file_format=array_record` (add --data_dir=DIR and set data.data_dir=DIR to use "
          "another folder)."
      ) from e
  features = builder.info.features
  if image_key not in features:
    raise ConfigError(f"data.image_key={image_key!r}: {name} has features {sorted(features)}.")
  if label_key is not None and label_key not in features:
    raise ConfigError(f"data.label_key={label_key!r}: {name} has features {sorted(features)}.")
  image_feature = features[image_key]
  example_shape = tuple(int(d) for d in image_feature.shape)
  if any(d is None or d < 0 for d in example_shape):
    raise ConfigError(f"{key}: feature {image_key!r} has variable shape {example_shape}.")
  dtype = np.dtype(getattr(image_feature, "np_dtype", np.float32))
  scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
  num_classes = None
  if label_key is not None:
    num_classes = getattr(features[label_key], "num_classes", None)

  def split(split_name):
    return TfdsSplit(sources[split_name], image_key, label_key, scale)

  return Dataset(f"tfds:{name}", split(train_split), split(test_split), example_shape,
                 num_classes=num_classes, kind="image" if len(example_shape) == 3 else "points")

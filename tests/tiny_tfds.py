"""A tiny tfds dataset builder, so tests read a real tfds folder offline (no TensorFlow)."""

import numpy as np
import tensorflow_datasets as tfds


class GmfTinyDigits(tfds.core.GeneratorBasedBuilder):
  """96 train / 40 test 8x8x1 uint8 images; each label lights up one row, so it is learnable."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            # Tensor, not Image: encoding Image features needs TensorFlow.
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(96, 0), "test": self._generate_examples(40, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      label = i % 10
      image = rng.integers(0, 64, (8, 8, 1), dtype=np.uint8)
      image[label % 8] += 150
      yield i, {"image": image, "label": label}

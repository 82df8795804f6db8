"""Tiny tfds dataset builders, so tests read a real tfds folder offline (no TensorFlow)."""

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds


def tiny_digit(i: int, seed: int) -> tuple[np.ndarray, int]:
  """Example `i` of the split drawn with `seed`: an (8, 8) uint8 image whose label's row is lit."""
  rng = np.random.default_rng([seed, i])  # one stream per example, so a test can redraw any
  label = i % 10
  image = rng.integers(0, 64, (8, 8), dtype=np.uint8)  # (H, W)
  image[label % 8] += 150
  return image, label


class GmfTinyDigits(tfds.core.GeneratorBasedBuilder):
  """96 train / 40 test 8x8x1 uint8 images; each label lights up one row, so it is learnable.

  The image is an `Image` feature, as in MNIST, so reading it decodes PNG (with PIL: tfds'
  numpy decoding needs no TensorFlow). Encoding a numpy array would need TensorFlow, so the
  examples are yielded as PIL images, which tfds encodes with PIL.
  """

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),  # PNG, decoded to uint8
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        disable_shuffling=True,  # record i is example i, so tests know what each index holds
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(96, 0), "test": self._generate_examples(40, 1)}

  def _generate_examples(self, n, seed):
    for i in range(n):
      image, label = tiny_digit(i, seed)
      yield i, {"image": self._encode(i, image), "label": label}

  def _encode(self, i, image):
    """What `_generate_examples` yields for image `i`: a PIL image, so tfds writes it as PNG."""
    del i
    return PIL.Image.fromarray(image, mode="L")


class GmfTinyDigitsCorrupt(GmfTinyDigits):
  """GmfTinyDigits whose image `CORRUPT_INDEX` (in each split) is stored as bytes, not a PNG.

  Reading that record must raise: a broken record silently skipped or zeroed would go unnoticed.
  """

  CORRUPT_INDEX = 3

  def _encode(self, i, image):
    if i == self.CORRUPT_INDEX:
      return b"not a png"  # tfds stores bytes as they are, already "encoded"
    return super()._encode(i, image)

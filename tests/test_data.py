"""Data: the built-in digits, synthetic sets, and tfds datasets read from a real folder."""

import io

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

import gmf_jax
from gmf_jax import ConfigError
from gmf_jax.config import default_config
from gmf_jax.data import load_digits, make_dataset
from gmf_jax.data.synthetic import load_gaussian_mixture, load_moons, load_spirals
from gmf_jax.data.tfds_source import TfdsSplit
from tests.conftest import CONFIGS
from tests.tiny_tfds import GmfTinyDigitsCorrupt, tiny_digit


def _data_config(**kw):
  cfg = default_config().data
  with cfg.unlocked():
    for k, v in kw.items():
      cfg[k] = v
  return cfg


def test_digits_fixed_split():
  ds = load_digits()
  assert len(ds.train) == 1437 and len(ds.test) == 360
  assert ds.example_shape == (8, 8, 1) and ds.num_classes == 10
  x = ds.train.arrays["x"]
  assert x.min() == 0.0 and x.max() == 1.0
  assert np.bincount(ds.train.arrays["y"], minlength=10).min() > 120  # every digit is there
  assert load_digits().train.arrays["y"].tobytes() == ds.train.arrays["y"].tobytes()


def test_binarize():
  ds = make_dataset(_data_config(name="digits", binarize=True))
  x = ds.train.get(np.arange(100))["x"]
  assert set(np.unique(x)) == {0.0, 1.0}


def test_binarize_needs_images():
  with pytest.raises(ConfigError, match="binarize=True needs image data"):
    make_dataset(_data_config(name="moons", binarize=True))


@pytest.mark.parametrize("loader", [load_moons, load_gaussian_mixture, load_spirals])
def test_synthetic_sets_are_fixed_by_data_seed(loader):
  a, b, c = loader(data_seed=0), loader(data_seed=0), loader(data_seed=1)
  assert np.array_equal(a.train.arrays["x"], b.train.arrays["x"])
  assert not np.array_equal(a.train.arrays["x"], c.train.arrays["x"])
  assert a.train.arrays["x"].shape == (2000, 2) and len(a.test) == 500


def test_gaussian_mixture_labels_match_components():
  ds = load_gaussian_mixture(num_components=4, std=0.05, radius=2.0)
  x, y = ds.train.arrays["x"], ds.train.arrays["y"]
  angle = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi)
  nearest = np.round(angle / (np.pi / 2)).astype(int) % 4
  assert (nearest == y).mean() > 0.99


def test_synthetic_kwargs_from_config():
  ds = make_dataset(_data_config(name="spirals", num_arms=3, num_train=300))
  assert len(ds.train) == 300 and ds.num_classes == 3


def test_unknown_dataset_option():
  with pytest.raises(ConfigError, match=r"data.noize=0.3 has no effect with "
                                       r"data.name='moons'.*Did you mean data.noise"):
    make_dataset(_data_config(name="moons", noize=0.3))


def test_tfds_dataset_from_a_real_folder(tiny_tfds_dir):
  ds = make_dataset(_data_config(name="tfds:gmf_tiny_digits", data_dir=str(tiny_tfds_dir)))
  assert len(ds.train) == 96 and len(ds.test) == 40
  assert ds.example_shape == (8, 8, 1) and ds.num_classes == 10
  batch = ds.train.get(np.array([0, 5, 7]))
  assert batch["x"].dtype == np.float32 and 0.0 <= batch["x"].min() <= batch["x"].max() <= 1.0
  raw = tfds.data_source("gmf_tiny_digits", data_dir=str(tiny_tfds_dir))["train"][5]
  np.testing.assert_allclose(batch["x"][1], raw["image"] / 255.0, rtol=1e-6)
  assert batch["y"][1] == raw["label"]


def test_tfds_image_feature_is_decoded_from_png(tiny_tfds_dir):
  indices = np.array([0, 5, 7, 95])
  ds = make_dataset(_data_config(name="tfds:gmf_tiny_digits", data_dir=str(tiny_tfds_dir)))
  batch = ds.train.get(indices)
  assert batch["x"].dtype == np.float32 and batch["x"].shape == (4, 8, 8, 1)
  # The folder holds PNG bytes, not pixels: decode them here with PIL, independently of tfds.
  stored = tfds.data_source("gmf_tiny_digits", data_dir=str(tiny_tfds_dir), split="train",
                            decoders={"image": tfds.decode.SkipDecoding()})
  for x, i in zip(batch["x"], indices, strict=True):
    png = stored[int(i)]["image"]
    assert png.startswith(b"\x89PNG")
    with PIL.Image.open(io.BytesIO(png)) as image:
      pixels = np.asarray(image)  # (8, 8) uint8
    np.testing.assert_array_equal(pixels, tiny_digit(int(i), seed=0)[0])  # PNG is lossless
    np.testing.assert_allclose(x[..., 0], pixels / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(batch["y"], indices % 10)


def test_tfds_corrupt_image_raises(tmp_path):
  """A record that does not decode stops the run, rather than being skipped or zeroed."""
  GmfTinyDigitsCorrupt(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  ds = make_dataset(_data_config(name="tfds:gmf_tiny_digits_corrupt", data_dir=str(tmp_path)))
  bad = GmfTinyDigitsCorrupt.CORRUPT_INDEX
  assert ds.train.get(np.array([bad - 1, bad + 1]))["x"].shape == (2, 8, 8, 1)
  with pytest.raises(PIL.UnidentifiedImageError):
    ds.train.get(np.array([bad - 1, bad, bad + 1]))


class _BatchedSource:
  """A source with `__getitems__` whose batched read fails, as a decoding error would."""

  def __len__(self):
    return 4

  def __getitem__(self, key):
    return {"image": np.zeros((2,), np.uint8), "label": 0}

  def __getitems__(self, keys):
    raise TypeError("bad record")


def test_tfds_split_reads_by_what_the_source_offers():
  records = [{"image": np.full((2,), 255 * i // 3, np.uint8), "label": i} for i in range(4)]
  batch = TfdsSplit(records, "image", "label", scale=255.0).get(np.array([3, 1]))  # item by item
  np.testing.assert_allclose(batch["x"], [[1.0, 1.0], [1 / 3, 1 / 3]], rtol=1e-6)
  np.testing.assert_array_equal(batch["y"], [3, 1])
  # A batched read's error reaches the caller: no silent switch to reading item by item.
  with pytest.raises(TypeError, match="bad record"):
    TfdsSplit(_BatchedSource(), "image", "label", scale=255.0).get(np.array([0, 1]))


@pytest.mark.parametrize("on_device", ["yes", "no"])
def test_training_on_a_tfds_dataset(tmp_path, tiny_tfds_dir, on_device):
  config = gmf_jax.load_config(
      str(CONFIGS / "vae_mnist.py") + ":smoke",
      {"data.data_dir": str(tiny_tfds_dir), "data.on_device": on_device, "batch_size": 16},
  )
  with config.unlocked():
    config.data.name = "tfds:gmf_tiny_digits"
  result = gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / on_device))
  assert int(result.state.step) == 20 and np.isfinite(result.metrics["eval/nelbo"])


def test_tfds_mock_data_mnist(tmp_path):
  # mock_data's default source cannot read a batch: it sets `__getitems__` on a MagicMock as a
  # plain partial of `_getitems(self, record_keys, ...)`, which MagicMock does not bind, so the
  # keys land in `self` and the call raises TypeError. So each split here is a list of records.
  requested = []

  def as_data_source(builder, split=None, **kwargs):
    del kwargs  # decoders, deserialize_method: the records are already decoded
    requested.append(split)
    rng = np.random.default_rng(0)
    shape = builder.info.features["image"].shape  # (28, 28, 1)
    return [{"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % 10}
            for i in range(64)]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    config = gmf_jax.load_config(str(CONFIGS / "vae_mnist.py") + ":smoke")
    result = gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "mock"))
  assert sorted(requested) == ["test", "train"]
  assert int(result.state.step) == 20 and result.metrics["eval/nelbo"] > 0


def test_missing_tfds_dataset_says_how_to_prepare(tmp_path):
  match = r"not prepared.*tfds build mnist --file_format=array_record"
  with pytest.raises(ConfigError, match=match):
    make_dataset(_data_config(name="tfds:mnist", data_dir=str(tmp_path)))
  assert list(tmp_path.iterdir()) == []  # probing leaves nothing behind


def test_unknown_tfds_name():
  with pytest.raises(ConfigError, match="tfds has no dataset 'no_such_set'"):
    make_dataset(_data_config(name="tfds:no_such_set"))


def test_tfds_bad_split_and_key(tiny_tfds_dir):
  with pytest.raises(ConfigError, match=r"data.test_split='validation'"):
    make_dataset(_data_config(name="tfds:gmf_tiny_digits", data_dir=str(tiny_tfds_dir),
                              test_split="validation"))
  with pytest.raises(ConfigError, match=r"data.image_key='img'"):
    make_dataset(_data_config(name="tfds:gmf_tiny_digits", data_dir=str(tiny_tfds_dir),
                              image_key="img"))

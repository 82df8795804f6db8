"""Data augmentation inside the jitted train step (`config.data.augment`).

The step augments its batch before the loss, with a key folded in from the step's own key, so
augmentation is bitwise reproducible and resumable (it depends only on the seed and the step),
members of a population augment independently (each has its own key), and the two feeds (data
on the device, streamed batches) give the same augmented batches. Evaluation, diagnostics and
the probe see the data as it is.

Options, applied in this order:
- `crop_padding` (int pixels, 0 = off): pad each image with zeros on every side and take a
  random crop of the original size (images only).
- `flip` (bool): flip each image horizontally with probability 1/2 (images only).
- `noise_std` (float, 0 = off): add Gaussian noise of this standard deviation to the inputs
  (images or points). A hyperparameter as data: a sweep over it shares one compiled program.
- `fn` ('pkg.module:fn' or 'file.py:fn', '' = off): a user's own pure, jittable
  `fn(rng, batch) -> batch` on the whole batch `{'x': (B, ...), 'y': (B,)}`, keeping its shapes
  and dtypes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from gmf_jax.checks import check_int, check_number
from gmf_jax.errors import ConfigError
from gmf_jax.registry import import_object

NOISE_KEY = "data.augment.noise_std"
# Folded into the step's key for the augmentation's own key (the loss keeps the step's key).
_STREAM = 0x61756700


@dataclasses.dataclass(frozen=True)
class Augment:
  """The step's augmentation; hashable, so it is part of the compiled program."""

  crop_padding: int = 0
  flip: bool = False
  noise: bool = False  # the standard deviation is `hparams[NOISE_KEY]`
  fn: Callable | None = None

  def __call__(self, rng: jax.Array, batch: dict[str, jax.Array],
               hparams: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    crop_key, flip_key, noise_key, fn_key = jax.random.split(jax.random.fold_in(rng, _STREAM), 4)
    x = batch["x"]
    if self.crop_padding:
      x = random_crop(crop_key, x, self.crop_padding)
    if self.flip:
      x = random_flip(flip_key, x)
    if self.noise:
      std = jnp.asarray(hparams[NOISE_KEY], x.dtype)
      x = x + std * jax.random.normal(noise_key, x.shape, x.dtype)
    batch = {**batch, "x": x}
    if self.fn is not None:
      batch = self.fn(fn_key, batch)
    return batch


def random_crop(rng: jax.Array, x: jax.Array, padding: int) -> jax.Array:
  """Per image, a crop of the original size from the image padded with `padding` zeros:
  (B, H, W, C) -> (B, H, W, C)."""
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * padding + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def random_flip(rng: jax.Array, x: jax.Array) -> jax.Array:
  """Each image flipped left-right with probability 1/2: (B, H, W, C)."""
  flip = jax.random.bernoulli(rng, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def make_augment(augment_config: Mapping[str, Any], dataset) -> Augment | None:
  """Checks `config.data.augment` against the data and builds the step's augmentation (None:
  nothing to do).

  Raises:
    ConfigError: a value out of range, or an option the data does not fit (a crop or a flip on
      points or a 1-D signal), or a user `fn` that cannot be imported or breaks the batch.
  """
  cfg = dict(augment_config)
  unknown = set(cfg) - {"crop_padding", "flip", "noise_std", "fn"}
  if unknown:
    raise ConfigError(f"data.augment.{sorted(unknown)[0]} is not an augmentation option; "
                      "options: crop_padding, flip, noise_std, fn.")
  padding = cfg.get("crop_padding", 0) or 0
  flip = cfg.get("flip", False)
  noise_std = cfg.get("noise_std", 0.0) or 0.0
  fn_name = cfg.get("fn") or ""
  check_int("data.augment.crop_padding", padding, low=0, hint="0: no random crops.")
  if not isinstance(flip, bool):
    raise ConfigError(f"data.augment.flip={flip!r} must be True or False.")
  check_number(NOISE_KEY, noise_std, low=0, hint="0: no noise.")
  shape = tuple(dataset.example_shape)
  image = dataset.kind == "image" and len(shape) == 3
  for key, on in (("crop_padding", padding), ("flip", flip)):
    if on and not image:
      raise ConfigError(
          f"data.augment.{key}={on!r} needs images (H, W, C); data {dataset.name!r} holds "
          f"{dataset.kind} of shape {shape}. Set data.augment.{key}="
          f"{'0' if key == 'crop_padding' else 'False'}.")
  if padding and padding >= min(shape[:2]):
    raise ConfigError(f"data.augment.crop_padding={padding} is not smaller than the images "
                      f"({shape[0]}x{shape[1]}); a crop could miss the image entirely.")
  fn = None
  if fn_name:
    if not isinstance(fn_name, str):
      raise ConfigError(f"data.augment.fn={fn_name!r} must be 'pkg.module:fn' or 'file.py:fn'.")
    fn = import_object(fn_name, key="data.augment.fn")
    if not callable(fn):
      raise ConfigError(f"data.augment.fn={fn_name!r} is {fn!r}, not a function.")
  augment = Augment(padding, flip, bool(noise_std), fn)
  if augment == Augment():
    return None
  _check_keeps_batch(augment, fn_name, shape, dataset)
  return augment


def _check_keeps_batch(augment: Augment, fn_name: str, shape, dataset) -> None:
  """Traces the augmentation on an abstract batch: it must keep the batch's keys, shapes and
  dtypes (no compute)."""
  batch = {"x": jax.ShapeDtypeStruct((2, *shape), jnp.float32),
           "y": jax.ShapeDtypeStruct((2,), jnp.int32)}
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
  hparams = {NOISE_KEY: jax.ShapeDtypeStruct((), jnp.float32)}
  try:
    out = jax.eval_shape(augment, rng, batch, hparams)
  except Exception as e:  # a user's fn that fails on the batch
    raise ConfigError(f"data.augment.fn={fn_name!r} fails on a batch of data {dataset.name!r} "
                      f"(x: (B, {', '.join(map(str, shape))})): {type(e).__name__}: {e}") from e
  want = {k: (v.shape, v.dtype) for k, v in batch.items()}
  got = ({k: (v.shape, v.dtype) for k, v in out.items()} if isinstance(out, Mapping) else out)
  if got != want:
    raise ConfigError(f"data.augment.fn={fn_name!r} must return the batch with the same keys, "
                      f"shapes and dtypes: got {got}, expected {want}.")

"""Feeding the jitted chunk: the train split on the device, or streamed from the host.

Both orders come from `epoch_permutation`, so a run gives the same batches either way.
"""

from __future__ import annotations

import concurrent.futures

import jax
import numpy as np

from gmf_jax.data import Split, materialize
from gmf_jax.train.step import epoch_permutation


def to_device(split: Split) -> dict[str, jax.Array]:
  """The whole split as device arrays with a leading example axis."""
  return jax.device_put(materialize(split))


def padded_eval_data(split: Split, batch_size: int) -> tuple[dict[str, jax.Array], jax.Array]:
  """The split padded to a multiple of `batch_size`, and a mask of the real examples."""
  arrays = materialize(split)
  n = len(split)
  batch_size = min(batch_size, n)
  pad = (-n) % batch_size
  padded = {
      k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in arrays.items()
  }
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  return jax.device_put(padded), jax.device_put(mask)


class HostBatches:
  """Stacked batches for chunks of steps, read from the host with one chunk of prefetch."""

  def __init__(self, split: Split, batch_size: int, data_key: jax.Array, slots: int):
    self.split = split
    self.slots = slots  # batches are padded to this many steps (one compiled chunk)
    self.batch_size = batch_size
    self.steps_per_epoch = len(split) // batch_size
    self._data_key = data_key
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gmf_jax-data")
    self._pending: tuple[tuple[int, int], concurrent.futures.Future] | None = None
    self._permutations: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      if len(self._permutations) > 2:
        self._permutations.pop(min(self._permutations))
      with jax.default_device(jax.devices("cpu")[0]):
        perm = epoch_permutation(self._data_key, epoch, len(self.split))
        self._permutations[epoch] = np.asarray(perm)
    return self._permutations[epoch]

  def _read(self, start: int, num_steps: int) -> dict[str, np.ndarray]:
    indices = []
    for step in range(start, start + num_steps):
      epoch, position = divmod(step, self.steps_per_epoch)
      b = position * self.batch_size
      indices.append(self._permutation(epoch)[b : b + self.batch_size])
    flat = self.split.get(np.concatenate(indices))
    stacked = {k: v.reshape((num_steps, self.batch_size, *v.shape[1:])) for k, v in flat.items()}
    pad = self.slots - num_steps
    if not pad:  # a full chunk, the usual case: no copy
      return stacked
    # Zeros, not padded indices: a tfds split would read and decode every padded example.
    return {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
            for k, v in stacked.items()}

  def prefetch(self, start: int, num_steps: int) -> None:
    """Starts reading the batches of steps [start, start + num_steps) in the background."""
    self._pending = ((start, num_steps), self._pool.submit(self._read, start, num_steps))

  def get(self, start: int, num_steps: int) -> dict[str, np.ndarray]:
    """The batches of steps [start, start + num_steps), stacked as (num_steps, B, ...)."""
    if self._pending is not None and self._pending[0] == (start, num_steps):
      batches = self._pending[1].result()
    else:
      batches = self._read(start, num_steps)
    self._pending = None
    return batches

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)

"""Streaming a split through grain: the batches of the training steps, read in the background.

A dataset that does not stay on the device is read through a `grain` pipeline whose source is
the split itself (a `tfds.data_source`, the in-memory arrays, or any `Split`): element `i` is
the block of batches of steps [i*K, (i+1)*K) (K = steps_per_call, one gather per block), and the
batch of step `s` is rows `epoch_permutation(data_key, epoch)[b : b + B]` of the split, the same
order the on-device path draws inside the jitted chunk. The pipeline is
a pure function of the step, so its position is the step the checkpoint holds: a resumed run
opens it at that step and reads the very batches it would have read, with any number of
workers or processes.

Several processes each read only their own rows of every global batch (`rows`), the rows that
land on their devices.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import jax
import numpy as np

from gmf_jax.data.dataset import ArraySplit, Split
from gmf_jax.data.order import epoch_permutation

MAX_AUTO_WORKERS = 4
# `config.data` keys of the stream, with their values for a config that leaves them out.
DEFAULTS = {"workers": -1, "prefetch": 2}


def setting(data_config, key: str) -> int:
  """`data.<key>` of the stream (`workers` or `prefetch`), its default when absent."""
  return data_config.get(key, DEFAULTS[key])


def reader_processes(data_config, split: Split, streams: int) -> int:
  """`data.workers` resolved: -1 chosen by the data (`default_workers`); 0 when one process
  reads several streams (one per member: reader processes for each would multiply)."""
  workers = setting(data_config, "workers")
  if streams > 1:
    return 0
  return workers if workers >= 0 else default_workers(split)


class StepBatch:
  """`step -> batch` of a split (this process's rows of it); picklable for grain's workers.

  `block(i)` is the batches of `block_steps` steps at once (steps [i*K, (i+1)*K), up to
  `stop`): one gather from the split for all of them, the unit grain reads and sends.
  """

  def __init__(self, split: Split, batch_size: int, data_key: np.ndarray,
               rows: tuple[int, int] | None = None, block_steps: int = 1,
               stop: int | None = None):
    self.split, self.batch_size = split, batch_size
    self.data_key = np.asarray(data_key)
    self.steps_per_epoch = len(split) // batch_size
    self.rows = rows or (0, batch_size)
    self.block_steps, self.stop = block_steps, stop
    self._cache: dict[int, np.ndarray] = {}

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_cache": {}}

  def permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      if len(self._cache) > 1:
        self._cache.pop(min(self._cache))
      with jax.default_device(jax.local_devices(backend="cpu")[0]):
        self._cache[epoch] = np.asarray(epoch_permutation(self.data_key, epoch, len(self.split)))
    return self._cache[epoch]

  def indices(self, step: int) -> np.ndarray:
    epoch, position = divmod(int(step), self.steps_per_epoch)
    start = position * self.batch_size
    lo, hi = self.rows
    return self.permutation(epoch)[start + lo : start + hi]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    return self.split.get(self.indices(step))

  def block(self, index: int) -> dict[str, np.ndarray]:
    """The stacked batches (steps, rows, ...) of block `index`."""
    first = int(index) * self.block_steps
    last = first + self.block_steps if self.stop is None else min(first + self.block_steps,
                                                                  self.stop)
    flat = self.split.get(np.concatenate([self.indices(s) for s in range(first, last)]))
    return {k: v.reshape((last - first, -1, *v.shape[1:])) for k, v in flat.items()}


def default_workers(split: Split) -> int:
  """Reader processes for `data.workers=-1`: none for arrays in memory (a copy per step is
  cheaper than sending it between processes), else up to 4, leaving the trainer a core."""
  inner = split
  while hasattr(inner, "split"):  # wrappers such as the binarized split
    inner = inner.split
  if isinstance(inner, ArraySplit):
    return 0
  return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


def _init_worker(worker_index: int, worker_count: int) -> None:
  """A reader process computes permutations on the CPU, never on (or holding) an accelerator,
  and ends when the trainer does, even one killed with SIGKILL (no orphans holding its files)."""
  del worker_index, worker_count
  jax.config.update("jax_platforms", "cpu")
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(0.25)
    os._exit(0)

  threading.Thread(target=watch, name="gmf_jax-reader-watch", daemon=True).start()


def open_stream(batch: StepBatch, start_block: int, *, workers: int, prefetch: int):
  """A grain iterator over the blocks of steps from `start_block` to `batch.stop`, read ahead
  in the background: `workers` processes (0: a thread of this process), `prefetch` blocks
  ahead of each."""
  import grain  # only when a run streams

  num_blocks = -(-batch.stop // batch.block_steps)
  dataset = grain.MapDataset.range(start_block, num_blocks).map(batch.block)
  if workers > 0:
    from absl import flags  # grain's reader processes read absl flags: defaults, unless parsed

    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch),
        worker_init_fn=_init_worker)
  else:
    stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                       prefetch_buffer_size=prefetch))
  return iter(stream)

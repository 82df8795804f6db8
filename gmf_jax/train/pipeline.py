"""Feeding the jitted chunk: the train split on the device, or streamed from the host by grain.

Both orders come from `epoch_permutation`, so a run gives the same batches either way.
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import numpy as np

from gmf_jax.data import Split, materialize


def to_device(split: Split) -> dict[str, jax.Array]:
  """The whole split as device arrays with a leading example axis (one device)."""
  return jax.device_put(materialize(split))


def padded_eval_data(split: Split, batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """The split padded to a multiple of `batch_size`, and a mask of the real examples."""
  arrays = materialize(split)
  n = len(split)
  pad = (-n) % batch_size
  padded = {
      k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in arrays.items()
  }
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  return padded, mask


class StreamedBatches:
  """Stacked batches for chunks of steps, streamed by grain, with one chunk assembled ahead.

  grain reads blocks of `slots` steps' batches in the background (`workers` processes, or a
  thread); a thread here cuts the next chunk out of them while the device computes the
  current chunk (a chunk aligned with a block is the block itself: no copy).

  Args:
    split: the training split.
    batch_size: the global batch.
    data_key: the member's data key (the epoch order).
    slots: batches are padded to this many steps (one compiled chunk); also grain's block.
    num_steps: the run's last step.
    rows: this process's rows [lo, hi) of every global batch (None: all).
    workers, prefetch: grain's reader processes and read-ahead (`config.data`).
  """

  def __init__(self, split: Split, batch_size: int, data_key, slots: int, num_steps: int,
               rows: tuple[int, int] | None = None, workers: int = 0, prefetch: int = 2):
    from gmf_jax.data import stream  # grain: only when a run streams

    self.batch = stream.StepBatch(split, batch_size, np.asarray(data_key), rows,
                                  block_steps=slots, stop=num_steps)
    self.slots = slots
    # open_stream(block index): grain's iterator from that block on
    self._open_stream = functools.partial(stream.open_stream, self.batch, workers=workers,
                                          prefetch=prefetch)
    self._iterator = None
    self._position: int | None = None  # the first step not yet handed out
    self._block: dict[str, np.ndarray] | None = None  # the block holding `_position`
    self._block_start = 0
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gmf_jax-data")
    self._pending: tuple[tuple[int, int], concurrent.futures.Future] | None = None

  def _open(self, start: int) -> None:
    self._close_iterator()
    index = start // self.slots
    self._iterator = self._open_stream(index)
    self._block, self._block_start, self._position = None, index * self.slots, start

  def _close_iterator(self) -> None:
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()
    self._iterator = None

  def _take(self, n: int) -> list[dict[str, np.ndarray]]:
    """Slices of blocks holding the next `n` steps' batches."""
    parts = []
    while n:
      if self._block is None:
        self._block = next(self._iterator)
      length = len(next(iter(self._block.values())))
      lo = self._position - self._block_start
      hi = min(length, lo + n)
      parts.append({k: v[lo:hi] for k, v in self._block.items()} if (lo, hi) != (0, length)
                   else self._block)
      n -= hi - lo
      self._position += hi - lo
      if hi == length:
        self._block, self._block_start = None, self._block_start + length
    return parts

  def _read(self, start: int, num_steps: int) -> dict[str, np.ndarray]:
    if self._position != start:  # the first chunk of a session (or a jump): open at `start`
      self._open(start)
    parts = self._take(num_steps)
    pad = self.slots - num_steps
    if len(parts) == 1 and not pad:  # a chunk aligned with a block, the usual case: no copy
      return parts[0]
    # Zeros, not more reads: a tfds split would read and decode every padded example.
    zeros = [] if not pad else [{k: np.zeros((pad, *v.shape[1:]), v.dtype)
                                 for k, v in parts[0].items()}]
    return {k: np.concatenate([p[k] for p in parts + zeros]) for k in parts[0]}

  def prefetch(self, start: int, num_steps: int) -> None:
    """Starts assembling the batches of steps [start, start + num_steps) in the background."""
    self._pending = ((start, num_steps), self._pool.submit(self._read, start, num_steps))

  def get(self, start: int, num_steps: int) -> dict[str, np.ndarray]:
    """The batches of steps [start, start + num_steps), stacked as (slots, B, ...)."""
    if self._pending is not None:
      (pending, future), self._pending = self._pending, None
      if pending == (start, num_steps):
        return future.result()
      try:  # read ahead for other steps (the loop never asks so): read these instead
        future.result()
      except Exception:  # noqa: BLE001 - its error is not this read's
        self._position = None
    return self._read(start, num_steps)

  def close(self) -> None:
    if self._pending is not None:
      self._pending[1].cancel()
      try:
        self._pending[1].result()
      except (concurrent.futures.CancelledError, Exception):  # noqa: BLE001 - closing anyway
        pass
      self._pending = None
    self._pool.shutdown(wait=True)
    self._close_iterator()


def local_block(sharding, shape: tuple[int, ...]) -> tuple[slice, ...]:
  """The part of a global array of `shape` whose shards live on this process's devices (a box:
  the shards of one process are contiguous along each split axis)."""
  boxes = sharding.addressable_devices_indices_map(shape).values()
  out = []
  for axis, size in enumerate(shape):
    starts = [box[axis].start or 0 for box in boxes]
    stops = [size if box[axis].stop is None else box[axis].stop for box in boxes]
    out.append(slice(min(starts), max(stops)))
  return tuple(out)


def global_array(sharding, local: dict[str, np.ndarray],
                 shape: tuple[int, ...]) -> dict[str, jax.Array]:
  """Each process's part of a global batch (leading axes `shape`, then each example's), as one
  global array (several processes)."""
  return {k: jax.make_array_from_process_local_data(sharding, v, (*shape, *v.shape[len(shape):]))
          for k, v in local.items()}

"""The chunk pipeline: the data's home (`make_feed`), dispatching a chunk of steps, collecting its
metrics.

Every chunk runs in one compiled program of `steps_per_call` slots, whatever its length; a chunk
ends where a periodic action is due (`actions.next_stop`), so the action sees the exact state of
that step. While a chunk computes, the next chunk's batches are read (streamed data).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gmf_jax import distributed, failpoints
from gmf_jax.data import materialize, stream
from gmf_jax.train import pipeline
from gmf_jax.train.actions import PeriodicAction, next_stop
from gmf_jax.train.metering import ChunkTimer
from gmf_jax.train.step import population_chunk, train_chunk_on_batches, train_chunk_on_device


@dataclasses.dataclass
class Feed:
  """`run(state, start, n)` queues a chunk of `n` steps from step `start` (returns at once);
  `prefetch(start, n)` starts reading a later chunk's batches; `close()` stops the readers."""

  run: Callable[[Any, int, int], tuple[Any, Any]]
  prefetch: Callable[[int, int], None] = lambda start, n: None
  close: Callable[[], None] = lambda: None
  data: Any = None  # the train split on the device (None: streamed)
  lower: Callable[[Any], None] = lambda state: None  # traces and lowers the program `run`
  # then compiles (or loads from the cache) for `state`, so other threads may start
  # compiling theirs beside that compilation without holding up this tracing


@dataclasses.dataclass
class Chunk:
  """A dispatched chunk: steps start+1 .. end, its output state and (device) metrics."""

  start: int
  end: int
  state: Any
  metrics: Any


class ChunkPipeline:
  """Dispatches chunks that end where the actions need the state, and collects their metrics."""

  def __init__(self, feed: Feed, actions: Sequence[PeriodicAction], longest: int,
               num_steps: int, size: int):
    self.feed, self.actions = feed, actions
    self.longest, self.num_steps, self.size = longest, num_steps, size
    self.timer = ChunkTimer()

  def end_of(self, start: int) -> int:
    return next_stop(self.actions, start, self.longest, self.num_steps)

  def dispatch(self, state, start: int) -> Chunk:
    """Queues the chunk from `start` (asynchronously: the device computes from here)."""
    failpoints.reach("train_call")
    end = self.end_of(start)
    state, metrics = self.feed.run(state, start, end - start)
    if end < self.num_steps:  # read the next chunk's batches while this one computes
      self.feed.prefetch(end, self.end_of(end) - end)
    return Chunk(start, end, state, metrics)

  def collect(self, chunk: Chunk) -> dict[str, np.ndarray]:
    """The chunk's per-step metrics on the host, (members, steps): one sync."""
    n = chunk.end - chunk.start
    metrics = {k: v[:, :n] for k, v in jax.device_get(chunk.metrics).items()}
    self.timer.chunk_done(n * self.size)
    return metrics


def _parts(exp) -> tuple[dict, Callable]:
  """The chunk's options and its population wrapper."""
  parts = dict(loss_for=exp.loss_for, tx_for=exp.tx_for, batch_sharding=exp.layout.batch,
               options=exp.step)
  return parts, functools.partial(population_chunk, spmd_axis_name=exp.layout.spmd_axis)


def device_chunk_fn(exp, state, size: int):
  """The jitted chunk of a population of `size` with the train split on the device,
  `fn(state, keys, train_data, num_active)` (`state`: arrays, or their shapes). On several
  devices its inputs and outputs are laid out explicitly: the state and keys split over
  `members` (replicated along `data`), the dataset replicated (see train/mesh.py)."""
  layout = exp.layout
  parts, vmapped = _parts(exp)
  chunk = functools.partial(train_chunk_on_device, batch_size=exp.config.batch_size,
                            num_steps=exp.config.steps_per_call, **parts)
  shardings = {}
  if layout.mesh is not None:
    states = layout.population(state)
    shardings = dict(out_shardings=(states, layout.member_axis),
                     in_shardings=(states, layout.member_axis, layout.replicated,
                                   layout.replicated))
  return jax.jit(vmapped(chunk, state, size), donate_argnums=0, **shardings)


def make_feed(exp, keys, state, size: int) -> Feed:
  """The chunk's program for the data's home: the train split on the device, or streamed
  (its batches split along B on several devices)."""
  layout = exp.layout
  if not exp.on_device:
    parts, vmapped = _parts(exp)
    shardings = ({} if layout.mesh is None
                 else dict(out_shardings=(layout.population(state), layout.member_axis)))
    return _streamed_feed(exp, keys, state, size, parts, vmapped, shardings)
  train_data = layout.put(materialize(exp.dataset.train))  # from the host: any process
  chunk_fn = device_chunk_fn(exp, state, size)
  return Feed(lambda state, start, n: chunk_fn(state, keys, train_data, np.int32(n)),
              data=train_data,
              lower=lambda state: chunk_fn.lower(state, keys, train_data, np.int32(0)))


def _streamed_feed(exp, keys, state, size, parts, vmapped, shardings) -> Feed:
  """Batches streamed by grain: (steps, B, ...), or (members, steps, B, ...) with a data order
  per member; with several processes each reads only the members and rows on its devices."""
  layout, slots, batch_size = exp.layout, exp.config.steps_per_call, exp.config.batch_size
  data_keys = distributed.host_copy(keys.data)
  shared = bool((data_keys == data_keys[0]).all())  # one data order (data_seed, or one member)
  per_member_data = not (shared or size == 1)
  data_sharding = layout.stacked_member_batches if per_member_data else layout.stacked_batches
  if layout.mesh is not None:
    shardings["in_shardings"] = (layout.population(state), layout.member_axis, data_sharding,
                                 layout.replicated)
  chunk = functools.partial(train_chunk_on_batches, **parts)
  batch_fn = jax.jit(vmapped(chunk, state, size, shared_data=shared), donate_argnums=0,
                     **shardings)
  global_shape = (size, slots, batch_size) if per_member_data else (slots, batch_size)
  block = ((slice(None),) * len(global_shape) if not distributed.multi_process()
           else pipeline.local_block(data_sharding, global_shape))
  local_members = range(*block[0].indices(size)[:2]) if per_member_data else [0]
  workers = stream.reader_processes(exp.config.data, exp.dataset.train, len(local_members))
  readers = [pipeline.StreamedBatches(exp.dataset.train, batch_size, data_keys[i], slots,
                                      exp.num_steps, rows=block[-1].indices(batch_size)[:2],
                                      workers=workers,
                                      prefetch=stream.setting(exp.config.data, "prefetch"))
             for i in local_members]

  def batches(start, n):
    got = [r.get(start, n) for r in readers]
    local = got[0] if not per_member_data else {k: np.stack([g[k] for g in got]) for k in got[0]}
    if not distributed.multi_process():
      return local
    return pipeline.global_array(data_sharding, local, global_shape)

  def prefetch(start, n):
    for r in readers:
      r.prefetch(start, n)

  def close():
    for r in readers:
      r.close()

  return Feed(lambda state, start, n: batch_fn(state, keys, batches(start, n), np.int32(n)),
              prefetch, close)

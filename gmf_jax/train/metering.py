"""Host-side bookkeeping of a chunk's metrics: windows of steps, and timing."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import jax
import numpy as np


class MetricWindow:
  """Averages per-step metrics over the steps between two log steps, across chunks.

  Sums are exact (`math.fsum`), so the logged means do not depend on how steps were chunked.
  The open part of a window is saved with each checkpoint (`state_dict`), so a resumed run
  logs the same means as one that never stopped.
  """

  def __init__(self):
    self._parts: list[dict[str, np.ndarray]] = []

  def add(self, metrics: dict[str, np.ndarray], start: int, log_steps: list[int]):
    """Takes a chunk's per-step metrics (steps start+1 .. start+n); yields the mean of each
    window that closes at one of `log_steps`."""
    begin = 0
    for s in log_steps:
      end = s - start
      self._parts.append({k: v[begin:end] for k, v in metrics.items()})
      yield self._close()
      begin = end
    if begin < len(next(iter(metrics.values()))):
      self._parts.append({k: v[begin:] for k, v in metrics.items()})

  def _close(self) -> dict[str, float]:
    parts, self._parts = self._parts, []
    out = {}
    for k in parts[0]:
      values = np.concatenate([p[k] for p in parts])
      out[k] = math.fsum(values.tolist()) / len(values)
    return out

  def state_dict(self) -> dict[str, list[float]]:
    if not self._parts:
      return {}
    return {k: np.concatenate([p[k] for p in self._parts]).tolist() for k in self._parts[0]}

  def load_state_dict(self, state: dict[str, list[float]]) -> None:
    self._parts = [{k: np.asarray(v) for k, v in state.items()}] if state else []


class LearningRates:
  """The schedule's learning rate at log steps, computed on the device a block at a time.

  One jitted call per `block` log steps, made before the first chunk and then rarely: a device
  call between chunks would queue behind the chunk already running, and the host's bookkeeping
  would wait for that chunk to end instead of overlapping with it.
  """

  def __init__(self, rates, every: int, start: int, last: int, block: int = 2048):
    """`rates(counts)`: the schedule at an int array of optimizer counts (one jitted call, with
    the member's hyperparameters as arguments: see `schedule_rates`)."""
    self._fn = rates
    self._every, self._last, self._block = every, last, block
    self._cache: dict[int, float] = {}
    self._fill(start + 1)

  def rebind(self, rates, after: int) -> None:
    """The schedule changed after step `after` (PBT gave the member new hyperparameters):
    rates from then on come from `rates`."""
    self._fn = rates
    self._cache = {s: v for s, v in self._cache.items() if s <= after}

  def __call__(self, steps: list[int]) -> list[float]:
    """The rate used by each of `steps` (the 1-based step that ends a log window)."""
    if any(s not in self._cache for s in steps):
      # From the first step missing on, at the log stride: after skipped updates (which lag
      # the schedule by a fixed number of steps until the next skip), the lagged log steps
      # are in the block too.
      self._fill(min(s for s in steps if s not in self._cache), extra=steps, aligned=False)
    return [self._cache[s] for s in steps]

  def _fill(self, first: int, extra=(), aligned: bool = True) -> None:
    """Rates for the next `block` log steps from `first` on (and `extra`); fixed length, so the
    schedule compiles once. `aligned`: at the multiples of the log stride."""
    end = first + self._block * self._every
    start = -(-first // self._every) * self._every if aligned else first
    want = {*range(start, end, self._every), *extra}
    if self._last < end:
      want.add(self._last)
    want = sorted(want)
    padded = np.full(-(-len(want) // self._block) * self._block, want[-1], np.int64)
    padded[: len(want)] = want
    values = np.asarray(self._fn(padded - 1))  # step s trains with the rate at index s - 1
    self._cache = dict(zip(want, values[: len(want)].tolist(), strict=True))


def schedule_rates(schedule):
  """`rates(counts, hparams)`: a schedule (gmf_jax.train.optim.Schedule) at many counts, jitted
  once for every value of the hyperparameters."""
  return jax.jit(jax.vmap(schedule, in_axes=(0, None)))


class Stopwatch:
  """Seconds the training thread spent in named parts of a run, summed over calls."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self.calls: dict[str, int] = {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
      self.calls[name] = self.calls.get(name, 0) + 1


class ChunkTimer:
  """Steady-state steps/s: steps after the first chunk (which includes compilation) over the
  wall time from its metrics to the last chunk's, host work in between included."""

  def __init__(self, clock=time.perf_counter):
    self._clock = clock
    self._start = clock()
    self._first_done: float | None = None
    self.first_chunk_sec: float | None = None
    self.steady_sec = 0.0
    self.steady_steps = 0

  def chunk_done(self, steps: int) -> None:
    now = self._clock()
    if self._first_done is None:
      self._first_done = now
      self.first_chunk_sec = now - self._start
    else:
      self.steady_sec = now - self._first_done
      self.steady_steps += steps

  def as_dict(self) -> dict[str, Any]:
    rate = self.steady_steps / self.steady_sec if self.steady_sec > 0 else None
    return {"first_chunk_sec": self.first_chunk_sec, "steps_per_sec": rate}

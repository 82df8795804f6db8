"""Metric writers. Each has `write(step, scalars)` and `close()`; the loop calls them in turn."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Callable, Mapping

METRICS_COLUMNS = ("step", "name", "value", "wall_time")


class CsvWriter:
  """`metrics.csv` in long format: one row per (step, name), appended and flushed per write
  (or once per `batched()` block of writes, e.g. a chunk's rows of one member).

  Columns: step, name, value, wall_time (seconds since the epoch). Long format keeps the file
  append-only when metrics appear or disappear, and loads into a table with one call.
  """

  def __init__(self, path: str, clock: Callable[[], float] = time.time):
    self.path = path
    self._clock = clock
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    self._file = open(path, "a", newline="")
    self._csv = csv.writer(self._file)
    self._holding = 0
    if new:
      self._csv.writerow(METRICS_COLUMNS)
      self._file.flush()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    now = self._clock()
    for name, value in scalars.items():
      self._csv.writerow((int(step), name, _format(value), f"{now:.6f}"))
    if not self._holding:
      self._file.flush()

  @contextlib.contextmanager
  def batched(self):
    """Writes inside are flushed once, at the end."""
    self._holding += 1
    try:
      yield
    finally:
      self._holding -= 1
      if not self._holding:
        self._file.flush()

  def close(self) -> None:
    self._file.close()


def _format(value: float) -> str:
  value = float(value)
  return repr(value) if math.isfinite(value) else str(value)  # repr round-trips exactly


class MultiWriter:
  """Forwards each write to several writers, in order."""

  def __init__(self, writers):
    self.writers = [w for w in writers if w is not None]

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    for writer in self.writers:
      writer.write(step, scalars)

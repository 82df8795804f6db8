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


class RowBuffer:
  """A writer that keeps its rows (as metrics.csv would hold them) instead of writing them."""

  def __init__(self, clock: Callable[[], float] = time.time):
    self.rows: list[dict[str, str]] = []
    self._clock = clock

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    now = f"{self._clock():.6f}"
    self.rows.extend({"step": str(int(step)), "name": name, "value": _format(value),
                      "wall_time": now} for name, value in scalars.items())


def rewrite_metrics(path: str, step: int, replaced: Callable[[str], bool],
                    rows: list[dict[str, str]]) -> list[dict[str, str]]:
  """Rewrites metrics.csv atomically with `rows` in place of the rows of `step` whose names
  `replaced` picks; the new rows go after the last row of a step <= `step`, so a file in step
  order stays in step order. Rows that are not complete (a torn line) are dropped.

  Returns:
    Every row of the rewritten file.
  """
  old = [r for r in complete_rows(path)
         if not (int(r["step"]) == step and replaced(r["name"]))]
  at = len(old)
  while at > 0 and int(old[at - 1]["step"]) > step:
    at -= 1
  out = [*old[:at], *rows, *old[at:]]
  write_rows(path, out)
  return out


def write_rows(path: str, rows: list[dict[str, str]]) -> None:
  """Replaces metrics.csv with `rows`, atomically (temp file + rename)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def complete_rows(path: str) -> list[dict[str, str]]:
  """The complete rows of a metrics.csv (a torn or malformed line is left out); [] if none."""
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return [r for r in csv.DictReader(f) if _complete(r)]


def _complete(row: dict[str, str | None]) -> bool:
  try:
    int(row["step"])
    float(row["value"])
    float(row["wall_time"])
  except (TypeError, ValueError, KeyError):
    return False
  return bool(row["name"])


class MultiWriter:
  """Forwards each write to several writers, in order."""

  def __init__(self, writers):
    self.writers = [w for w in writers if w is not None]

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    for writer in self.writers:
      writer.write(step, scalars)

  @contextlib.contextmanager
  def batched(self):
    """Each writer's own `batched()` block, where it has one (writes sent on once, at the end)."""
    with contextlib.ExitStack() as stack:
      for writer in self.writers:
        if hasattr(writer, "batched"):
          stack.enter_context(writer.batched())
      yield

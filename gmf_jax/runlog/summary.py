"""`summary.json`: the final and best value of each metric, and facts about the run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gmf_jax.runlog.files import write_json

HIGHER_IS_BETTER = ("accuracy",)


def higher_is_better(name: str) -> bool:
  return name.rsplit("/", 1)[-1] in HIGHER_IS_BETTER


class Summary:
  """Tracks each metric's final and best value; `save` writes it atomically."""

  def __init__(self, path: str):
    self.path = path
    self.metrics: dict[str, dict[str, float | int]] = {}
    self.info: dict[str, Any] = {}

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      value = float(value)
      entry = self.metrics.setdefault(name, {})
      entry["final"], entry["final_step"] = value, int(step)
      if not math.isfinite(value):
        continue
      best = entry.get("best")
      better = best is None or (value > best if higher_is_better(name) else value < best)
      if better:
        entry["best"], entry["best_step"] = value, int(step)

  write = update  # so the summary is one of the loop's writers

  def final(self) -> dict[str, float]:
    return {name: entry["final"] for name, entry in self.metrics.items()}

  def save(self, *, sync: bool = True) -> None:
    """Writes summary.json atomically; `sync=False` skips waiting for the disk (a copy made
    while the run trains: a resumed run rebuilds its summary from metrics.csv)."""
    write_json(self.path, {**self.info, "metrics": self.metrics}, sync=sync)

  def is_best(self, name: str, value: float, mode: str = "auto") -> bool:
    """Whether `value` would improve on the best `name` so far (before `update`)."""
    if not math.isfinite(value):
      return False
    best = self.metrics.get(name, {}).get("best")
    higher = higher_is_better(name) if mode == "auto" else mode == "max"
    return best is None or (value > best if higher else value < best)

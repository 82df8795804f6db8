"""When a diagnostic runs: every N steps, log-spaced (dense early in training), or at the end."""

from __future__ import annotations

import dataclasses

import numpy as np

from gmf_jax.errors import ConfigError

KINDS = ("every", "log", "end")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The set of steps (after that many optimizer steps) at which a diagnostic runs."""

  steps: frozenset[int]

  def due(self, step: int) -> bool:
    return step in self.steps

  def next_after(self, step: int) -> int | None:
    later = [s for s in self.steps if s > step]
    return min(later) if later else None


def make_schedule(kind: str, num_steps: int, *, every_steps: int = 0, num_points: int = 10,
                  key: str = "diagnostics") -> Schedule:
  """Builds a schedule; every kind includes the last step.

  Args:
    kind: 'every' (multiples of `every_steps`), 'log' (`num_points` steps spaced evenly in
      log(step) from 1 to num_steps) or 'end'.
    num_steps: the run's length.
    every_steps: for 'every'.
    num_points: for 'log'.
    key: the config key, for errors.
  """
  if kind == "every":
    if every_steps <= 0:
      raise ConfigError(f"{key}.every_steps={every_steps} must be > 0 with schedule='every'.")
    steps = set(range(every_steps, num_steps + 1, every_steps))
  elif kind == "log":
    if num_points < 1:
      raise ConfigError(f"{key}.num_points={num_points} must be >= 1 with schedule='log'.")
    steps = set(np.unique(np.round(np.geomspace(1, num_steps, num_points))).astype(int).tolist())
  elif kind == "end":
    steps = set()
  else:
    raise ConfigError(f"{key}.schedule={kind!r} must be one of {', '.join(KINDS)}.")
  steps.add(num_steps)
  return Schedule(frozenset(s for s in steps if 1 <= s <= num_steps))

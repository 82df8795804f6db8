"""When a diagnostic runs: every N steps, log-spaced (dense early in training), or at the end."""

from __future__ import annotations

import dataclasses

import numpy as np

from gmf_jax.checks import check_choice, check_int
from gmf_jax.errors import ConfigError

KINDS = ("every", "log", "end")
DEFAULT_NUM_POINTS = 10


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The set of steps (after that many optimizer steps) at which a diagnostic runs."""

  steps: frozenset[int]

  def due(self, step: int) -> bool:
    return step in self.steps

  def next_after(self, step: int) -> int | None:
    later = [s for s in self.steps if s > step]
    return min(later) if later else None


def make_schedule(kind: str, num_steps: int, *, every_steps: int | None = None,
                  num_points: int | None = None, key: str = "diagnostics") -> Schedule:
  """Builds a schedule; every kind includes the last step.

  Args:
    kind: 'every' (multiples of `every_steps`), 'log' (`num_points` steps spaced evenly in
      log(step) from 1 to num_steps) or 'end'.
    num_steps: the run's length.
    every_steps: for 'every' (required there), an integer >= 1.
    num_points: for 'log', an integer >= 1 (default 10).
    key: the config key of the diagnostic, for errors.

  Raises:
    ConfigError: a bad value, or a key the kind does not use (it would silently do nothing).
  """
  check_choice(f"{key}.schedule", kind, KINDS)
  # A key the schedule ignores is a mistake to point out, not a no-op: every_steps=500 with
  # schedule='log' reads as if it ran every 500 steps.
  for name, value, used_by in (("every_steps", every_steps, "every"),
                               ("num_points", num_points, "log")):
    if value is not None and kind != used_by:
      raise ConfigError(f"{key}.{name}={value!r} does nothing with schedule={kind!r} (only with "
                        f"schedule={used_by!r}); remove it or change the schedule.")
  if kind == "every":
    required = "schedule='every' needs it." if every_steps is None else ""
    check_int(f"{key}.every_steps", every_steps, low=1, hint=required)
    steps = set(range(every_steps, num_steps + 1, every_steps))
  elif kind == "log":
    num_points = DEFAULT_NUM_POINTS if num_points is None else num_points
    check_int(f"{key}.num_points", num_points, low=1)
    steps = set(np.unique(np.round(np.geomspace(1, num_steps, num_points))).astype(int).tolist())
  else:  # 'end'
    steps = set()
  steps.add(num_steps)
  return Schedule(frozenset(s for s in steps if 1 <= s <= num_steps))

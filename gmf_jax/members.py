"""Members of a population: a state whose arrays have a leading member axis (the step counter
is shared). Used by training, checkpoints and diagnostics alike."""

from __future__ import annotations

from typing import Any

import jax


def member(state: Any, i: int) -> Any:
  """Member `i` of a population's state (arrays with a leading member axis; the step counter
  is shared). Works on device arrays, host arrays and shape structs alike."""
  step = state.step
  return jax.tree_util.tree_map(lambda a: a[i], state.replace(step=None)).replace(step=step)


def with_member_axis(state: Any) -> Any:
  """A run's own state as a population of one."""
  step = state.step
  return jax.tree_util.tree_map(lambda a: a[None], state.replace(step=None)).replace(step=step)

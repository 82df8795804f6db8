"""Piecewise-constant hyperparameters: any data hyperparameter set to new values at given steps.

    c.piecewise.optimizer.learning_rate = dict(steps=[500, 1000], values=[0.1, 0.3, 0.05])

trains steps 1-500 with 0.1, 501-1000 with 0.3 and the rest with 0.05 (the value replaces the
config's `optimizer.learning_rate`: with a decaying schedule it is the schedule's peak). Any
hyperparameter that is data (`gmf_jax.train.hparams`: the optimizer's and the loss's floats,
the schedule's lengths, `ema.decay`, ...) can be scheduled this way, in the one compiled
program: the values travel in `TrainState.hparams`, and chunks end at the steps where they
change. A resumed run takes the values of the step it resumes at. `metrics.csv` gets
`hparams/<key>` rows at log steps with the value in use. This is how `python -m gmf_jax.sweep
--replay=...` follows a PBT member's history.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax.config import flatten, setting
from gmf_jax.errors import ConfigError
from gmf_jax.train.actions import PeriodicAction, Schedule, Tick

Pieces = dict[str, tuple[tuple[int, ...], tuple[float, ...]]]  # key -> (steps, values)


def parse(config, hparams: Mapping[str, Any], num_steps: int) -> Pieces:
  """`config.piecewise`, checked against the run's data hyperparameters and length.

  Raises:
    ConfigError: naming the key, its value and the fix.
  """
  given = setting(config, "piecewise")
  entries: dict[str, dict[str, Any]] = {}
  for key, value in flatten(given).items():
    head, _, field = key.rpartition(".")
    entries.setdefault(head, {})[field] = value
  out: Pieces = {}
  for key, entry in entries.items():
    label = f"piecewise.{key}"
    if set(entry) != {"steps", "values"}:
      raise ConfigError(f"{label} must be dict(steps=[...], values=[...]), got "
                        f"{sorted(entry)}.")
    if key not in hparams:
      raise ConfigError(f"{label}: {key!r} is not a data hyperparameter of this run (one that "
                        f"reaches the step as an array); these are: "
                        f"{', '.join(sorted(hparams)) or 'none'}.")
    steps, values = tuple(entry["steps"] or ()), tuple(entry["values"] or ())
    if not all(_is_int(s) and 0 < s < num_steps for s in steps) or list(steps) != sorted(
        set(steps)):
      raise ConfigError(f"{label}.steps={list(steps)} must be increasing steps between 1 and "
                        f"num_steps={num_steps} (exclusive).")
    if len(values) != len(steps) + 1 or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
      raise ConfigError(f"{label}.values must be {len(steps) + 1} numbers (one more than "
                        f"steps: the value before the first step, then after each), got "
                        f"{list(values)}.")
    out[key] = (tuple(int(s) for s in steps), tuple(values))
  return out


def value_at(piece: tuple[tuple[int, ...], tuple[float, ...]], step: int) -> float:
  """The value steps after `step` train with."""
  steps, values = piece
  return values[sum(1 for s in steps if s <= step)]


def at_step(hparams: Mapping[str, Any], pieces: Pieces, step: int) -> dict[str, Any]:
  """`hparams` (arrays with a member axis, on the host) with the scheduled keys' values of
  `step`."""
  out = dict(hparams)
  for key, piece in pieces.items():
    held = np.asarray(out[key])
    out[key] = np.full(held.shape, value_at(piece, step), held.dtype)
  return out


def make_piecewise(context) -> PeriodicAction | None:
  """Sets the scheduled hyperparameters at their steps (every member of the population alike),
  after the best checkpoint's pick and before the periodic checkpoint."""
  exp, record = context.exp, context.record
  pieces = exp.piecewise
  if not pieces:
    return None

  def show(step: int) -> None:
    values = {k: value_at(p, step) for k, p in pieces.items()}
    for m in record.members:
      m.logged.update({f"hparams/{k}": float(np.float32(v)) for k, v in values.items()})
      record.retune(m.index, values, step)

  show(context.start_step)
  steps = sorted({s for steps, _ in pieces.values() for s in steps if s > context.start_step})

  def run(tick: Tick) -> None:
    state = tick.state
    hparams = dict(state.hparams)
    for key, piece in pieces.items():
      hparams[key] = jnp.full_like(hparams[key], value_at(piece, tick.step))
    state = state.replace(hparams=hparams)
    tick.state = state if exp.layout.mesh is None else jax.device_put(
        state, exp.layout.population(state))
    show(tick.step)

  return PeriodicAction("piecewise", Schedule.make(exp.num_steps, steps=steps, end=False), run)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)

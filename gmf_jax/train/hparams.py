"""Hyperparameters as data: which config values reach the compiled step as arrays.

A number that is not a shape is data: the learning rate and every other float option of the
optimizer, the schedule's lengths, boundaries and end values, the loss's float fields
(`beta`, `obs_sigma`, `label_smoothing`), `ema.decay` and `data.augment.noise_std`. They
travel in `TrainState.hparams`, so one compiled
program trains any of their values (a learning-rate grid compiles once, and a rerun with
another rate loads the program from the compilation cache), and `jax.vmap` gives every member
of a population its own.

Everything else is part of the program: names, shapes, booleans, and a data key whose value is
0 or None (it switches a part off: no momentum, no weight decay, no warmup, no label
smoothing). Members that differ there cannot share a program (see `program_key`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from gmf_jax.config import flatten

SECTIONS = ("optimizer", "schedule", "loss")
# Integer schedule options that are lengths in steps (data); other integers are shapes.
SCHEDULE_LENGTHS = ("warmup_steps", "decay_steps", "transition_steps", "boundaries")
INT_KEYS = frozenset(f"schedule.{k}" for k in SCHEDULE_LENGTHS)
# Keys that never change the compiled program and are not hyperparameters of the step.
RUN_ONLY = ("name", "seed", "data_seed", "num_seeds", "wandb.", "progress_bar")


# Data keys outside those sections: the averaged weights' decay and the augmentation's noise.
OTHER_DATA = frozenset({"ema.decay", "data.augment.noise_std"})


def is_data(key: str, value: Any) -> bool:
  """Whether `key=value` reaches the step as an array rather than as part of the program."""
  if key in OTHER_DATA:
    return not is_off(value) and isinstance(value, numbers.Real)
  section, _, leaf = key.partition(".")
  if section not in SECTIONS or leaf == "name" or "." in leaf or is_off(value):
    return False
  if key in INT_KEYS:
    return _is_int(value) or (isinstance(value, (list, tuple)) and all(map(_is_int, value)))
  return isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))


def is_off(value: Any) -> bool:
  """0, None, False or empty: the value switches a part of the program off."""
  if value is None or isinstance(value, bool):
    return True
  if isinstance(value, (list, tuple)):
    return len(value) == 0
  return isinstance(value, numbers.Real) and value == 0


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_arrays(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Concrete hyperparameters as the arrays the step receives: int32 step lengths, float32
  rates."""
  return {k: np.asarray(v, np.int32 if k in INT_KEYS else np.float32) for k, v in values.items()}


def program_key(config: Mapping[str, Any]) -> tuple:
  """What members must share to train in one program: the config without its data values,
  seeds and names. Data keys keep whether they are off (0 or None), which changes the program.
  """
  out = []
  for key, value in sorted(flatten(config).items()):
    if any(key == r or (r.endswith(".") and key.startswith(r)) for r in RUN_ONLY):
      continue
    if is_data(key, value):
      value = "<data>"
    out.append((key, repr(tuple(value) if isinstance(value, list) else value)))
  return tuple(out)

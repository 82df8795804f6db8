"""Range checks for config values, one line each, raising `ConfigError` at build time.

Each component checks its own options where it is defined (an optimizer next to the
optimizer, a diagnostic in its factory), with these helpers, so every message has one shape:
the key, the value, and what is allowed.

    check_number("optimizer.b1", b1, low=0, high=1, high_open=True)   # b1 in [0, 1)
    check_int("model.latent_dim", latent_dim, low=1)                  # an integer >= 1
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from collections.abc import Sequence
from typing import Any

from gmf_jax.errors import ConfigError

_deferred = threading.local()


@contextlib.contextmanager
def deferred():
  """Inside, the checks pass everything: a component is being rebuilt inside a compiled step,
  from values that were checked at build time and are now arrays (hyperparameters as data)."""
  before = getattr(_deferred, "on", False)
  _deferred.on = True
  try:
    yield
  finally:
    _deferred.on = before


def _skip() -> bool:
  return getattr(_deferred, "on", False)


def _allowed(low, high, low_open: bool, high_open: bool) -> str:
  if low is not None and high is not None:
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
  if low is not None:
    return f"{'>' if low_open else '>='} {low:g}"
  if high is not None:
    return f"{'<' if high_open else '<='} {high:g}"
  return "a finite number"


def check_number(key: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 hint: str = "") -> None:
  """Refuses `value` unless it is a finite real number within the bounds.

  Args:
    key: the config key, as the user writes it (`optimizer.b1`).
    value: the value found there.
    low, high: the bounds (None: unbounded on that side).
    low_open, high_open: whether the bound itself is excluded.
    allow_none: None is a valid value (the option is off).
    hint: appended to the message (how to fix it, what None means).

  Raises:
    ConfigError: `key=value must be in [low, high)` (or `> low`, ...).
  """
  if (value is None and allow_none) or _skip():
    return
  allowed = _allowed(low, high, low_open, high_open)
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
  if ok:
    ok = not (low is not None and (value < low or (low_open and value == low)))
    ok = ok and not (high is not None and (value > high or (high_open and value == high)))
  if not ok:
    none = " (or None)" if allow_none else ""
    raise ConfigError(f"{key}={value!r} must be {allowed}{none}.{' ' + hint if hint else ''}")


def check_int(key: str, value: Any, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False, hint: str = "") -> None:
  """Refuses `value` unless it is an integer in [low, high] (bools are not integers here)."""
  if (value is None and allow_none) or _skip():
    return
  is_int = _is_int(value)
  if not is_int or (low is not None and value < low) or (high is not None and value > high):
    allowed = _allowed(low, high, False, False)
    none = " (or None)" if allow_none else ""
    raise ConfigError(
        f"{key}={value!r} must be an integer {allowed}{none}.{' ' + hint if hint else ''}")


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
  """Refuses `value` unless it is one of `choices`."""
  if _skip():
    return
  if value not in tuple(choices):
    raise ConfigError(f"{key}={value!r} must be one of {', '.join(map(repr, choices))}.")


def check_ints(key: str, values: Any, *, low: int | None = None, nonempty: bool = False,
               increasing: bool = False, high: int | None = None) -> None:
  """Refuses `values` unless it is a sequence of integers within bounds (and strictly
  increasing, when asked), e.g. layer widths or step boundaries."""
  if _skip():
    return
  what = "a non-empty sequence" if nonempty else "a sequence"
  bounds = f" {_allowed(low, high, False, False)}" if low is not None or high is not None else ""
  order = ", strictly increasing" if increasing else ""
  message = f"{key}={values!r} must be {what} of integers{bounds}{order}."
  if not isinstance(values, (list, tuple)) or (nonempty and not values):
    raise ConfigError(message)
  for i, v in enumerate(values):
    if not _is_int(v):
      raise ConfigError(message)
    if (low is not None and v < low) or (high is not None and v > high):
      raise ConfigError(message)
    if increasing and i and v <= values[i - 1]:
      raise ConfigError(message)


def _is_int(value: Any) -> bool:
  """Python and numpy integers (a dataset may report sizes as numpy ints), not bools."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)

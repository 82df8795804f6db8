"""Failpoints: named moments of a run at which a test delivers a real fault.

The run calls `reach(name)` at each moment worth testing (the run folder written, the state
built, each training call, an evaluation, a checkpoint save, the diagnostics, the final plots,
...). Unarmed, that is one dict lookup. Armed, the named moment sends a real signal to this
process (handled by the run's real signal handlers), kills it with SIGKILL, or raises, so
tests of preemption and crashes hit exact moments instead of guessing with timers:

    GMF_JAX_FAILPOINTS="eval@2=SIGTERM"             # the 2nd evaluation gets a SIGTERM
    GMF_JAX_FAILPOINTS="train_call@5=SIGKILL"       # killed as the 5th training call starts
    GMF_JAX_FAILPOINTS="first_call=SIGTERM+0.05"    # 50 ms later, from a timer (mid-compile)
    GMF_JAX_FAILPOINTS="init=raise"                 # a RuntimeError at that moment

or `arm("eval@2=SIGTERM")` in-process. `@N` (default 1) is the N-th time the moment is
reached in this process; each point fires once.
"""

from __future__ import annotations

import collections
import os
import signal
import threading

ENV = "GMF_JAX_FAILPOINTS"

_armed: dict[str, tuple[int, str]] = {}
_reached: collections.Counter = collections.Counter()


class FailpointError(RuntimeError):
  """What an armed `name=raise` failpoint raises."""


def arm(spec: str | None) -> None:
  """Arms the failpoints in `spec` (`name[@N]=ACTION,...`), replacing any armed before.

  ACTION: SIGTERM, SIGINT or SIGKILL (optionally `+SECONDS`, sent from a timer thread), or
  `raise`.
  """
  _armed.clear()
  _reached.clear()
  for item in filter(None, (spec or "").split(",")):
    point, sep, action = item.strip().partition("=")
    name, _, nth = point.partition("@")
    if not sep or not name:
      raise ValueError(f"{ENV}: {item!r} must look like name[@N]=ACTION.")
    _armed[name] = (int(nth or 1), action.strip())


def reach(name: str) -> None:
  """Marks the moment `name`; delivers its fault if armed for this time."""
  if not _armed or name not in _armed:
    return
  _reached[name] += 1
  nth, action = _armed[name]
  if _reached[name] != nth:
    return
  del _armed[name]
  if action == "raise":
    raise FailpointError(f"failpoint {name!r} (test fault)")
  signame, _, delay = action.partition("+")
  signum = getattr(signal, signame)
  if delay:
    timer = threading.Timer(float(delay), os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()
  else:
    os.kill(os.getpid(), signum)


arm(os.environ.get(ENV))

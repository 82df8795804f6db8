"""SIGTERM and Ctrl-C end a run cleanly: the loop finishes its jitted call, saves and exits."""

from __future__ import annotations

import signal
import threading


class Preempted(Exception):
  """Raised after a checkpoint was saved because of SIGTERM or SIGINT (Ctrl-C)."""

  def __init__(self, signum: int, step: int):
    self.signum = signum
    self.step = step
    super().__init__(
        f"stopped by {signal.Signals(signum).name} at step {step}; a checkpoint was saved. "
        "Run the same command with the same --workdir to resume."
    )

  @property
  def exit_code(self) -> int:
    return 128 + self.signum  # the shell's convention for death by signal


class PreemptionGuard:
  """While active, SIGTERM/SIGINT set `signum` instead of killing; a second Ctrl-C still does.

  Signal handlers only exist in the main thread; elsewhere the guard does nothing.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> bool:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    return False

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    self.signum = signum

"""SIGTERM and Ctrl-C end a run cleanly: the loop finishes its jitted call, saves and exits."""

from __future__ import annotations

import contextlib
import signal
import threading


class Preempted(Exception):
  """Raised when SIGTERM or SIGINT (Ctrl-C) stopped a run; the message says what was saved.

  Attributes:
    signum: the signal.
    step: the step the run stopped at.
    saved: whether a checkpoint of `step` was saved now. False when the signal came before
      the first training step of this session: nothing new to save, and a rerun resumes
      from `step` (0, or the checkpoint it was about to resume from).
  """

  def __init__(self, signum: int, step: int, saved: bool = True):
    self.signum = signum
    self.step = step
    self.saved = saved
    name = signal.Signals(signum).name
    rerun = "Run the same command with the same --workdir to"
    if saved:
      message = f"stopped by {name} at step {step}; a checkpoint of step {step} was saved. "
      message += f"{rerun} resume."
    elif step:
      message = (f"stopped by {name} before training resumed from the checkpoint of step "
                 f"{step}, which holds the run. {rerun} resume.")
    else:
      message = (f"stopped by {name} before the first training step; nothing to save. "
                 f"{rerun} start it.")
    super().__init__(message)

  @property
  def exit_code(self) -> int:
    return 128 + self.signum  # the shell's convention for death by signal


class PreemptionGuard:
  """While active, SIGTERM/SIGINT set `signum` instead of killing; a second Ctrl-C still
  stops at once (KeyboardInterrupt), except inside `protected()`.

  Signal handlers only exist in the main thread; elsewhere the guard does nothing.

  `across_processes` (a multi-process job): a signal must stop every process at the same step,
  or the others would wait forever in the next collective. The guard then leaves SIGTERM to
  JAX's preemption notifier (`jax.distributed` installs it) and `poll()` asks JAX's
  preemption sync point, which answers the same in every process: a SIGTERM to any one of them
  stops all at the first step they all reach after it.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, across_processes: bool = False):
    self.signum: int | None = None
    self.across_processes = across_processes
    self._previous = {}
    self._protected = 0
    self._polls = 0

  def poll(self) -> bool:
    """Whether to stop now (at a chunk's end); every process calls it at the same chunks."""
    if self.across_processes and self.signum is None:
      from gmf_jax import distributed

      # JAX's sync point counts calls one by one (it stops at "the next one" after a
      # notice), so it is handed the number of polls, the same in every process.
      self._polls += 1
      if distributed.reached_sync_point(self._polls):
        self.signum = signal.SIGTERM
    return self.signum is not None

  def __enter__(self) -> PreemptionGuard:
    if self.across_processes:  # JAX's notifier holds SIGTERM; see the class docstring
      return self
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
    if self.signum is not None and signum == signal.SIGINT and not self._protected:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    if self.signum is None:
      self.signum = signum

  @contextlib.contextmanager
  def protected(self):
    """A section a second Ctrl-C does not cut short (the final checkpoint wait, the status)."""
    self._protected += 1
    try:
      yield
    finally:
      self._protected -= 1

  def stop_if_signalled(self, step: int) -> None:
    """Before training starts: raises Preempted (nothing saved) if a signal has come."""
    if self.signum is not None:
      raise Preempted(self.signum, step, saved=False)

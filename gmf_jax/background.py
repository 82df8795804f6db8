"""Background threads that yield the CPU to training."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def lower_priority() -> None:
  """Gives the calling thread the lowest CPU priority (on Linux a thread has its own nice
  value; processes it starts inherit it), so its work runs on cycles training leaves idle.
  Best effort: a no-op where that is not possible."""
  try:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
  except (AttributeError, OSError):
    pass


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
  """Starts `target` in a daemon thread at the lowest CPU priority."""

  def run():
    lower_priority()
    target()

  thread = threading.Thread(target=run, name=name, daemon=True)
  thread.start()
  return thread

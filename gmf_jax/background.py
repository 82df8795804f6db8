"""Background threads for work beside training (wandb, warm-ups)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
  """Starts `target` in a daemon thread.

  The thread keeps the normal priority: the training thread waits for these threads at the end
  (or before a diagnostic), and a lowered priority would leave them starved exactly when the
  cores are busiest (tested: a test suite on 2 busy cores ran far slower).
  """
  thread = threading.Thread(target=target, name=name, daemon=True)
  thread.start()
  return thread

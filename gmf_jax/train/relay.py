"""The multi-process rules of a run, in one place.

Every process trains; only process 0 writes the record (rows, summaries, diagnostics). An error
in that work is held until the next chunk boundary, where every process learns of it and stops
together (`hear`): the others would otherwise wait forever in the next collective. With one
process there is nothing to relay: an error is raised where it happens.
"""

from __future__ import annotations

import contextlib
from typing import Any

from gmf_jax import distributed


class PrimaryRelay:
  """Process 0's work and its outcome, told to every process at chunk boundaries."""

  def __init__(self, multi_process: bool | None = None, primary: bool | None = None,
               verdict=distributed.primary_verdict):
    self.multi_process = distributed.multi_process() if multi_process is None else multi_process
    self.primary = distributed.is_primary() if primary is None else primary
    self.held: Exception | None = None  # process 0's, until every process has heard it
    self._verdict = verdict
    self._count = 0

  @contextlib.contextmanager
  def work(self):
    """Work whose error must reach every process (only process 0 writes and diagnoses)."""
    try:
      yield
    except Exception as e:
      if not self.multi_process:
        raise
      self.held = self.held or e

  def as_work(self, fn):
    """`fn` wrapped to run as `work`, later (deferred to after the next chunk's dispatch)."""
    def run():
      with self.work():
        fn()
    return run

  def hear(self) -> None:
    """At a chunk boundary: raises process 0's error in every process (several processes)."""
    if not self.multi_process:
      return
    self._count += 1
    error = self.held
    word = self._verdict(self._count, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
      raise error
    if word is not None:
      raise RuntimeError(f"process 0 stopped the run: {word}")

  def host_view(self, tree: Any) -> Any:
    """What process 0's host-side work reads: `tree` itself with one process; with several, its
    host copy (a collective every process joins)."""
    return distributed.host_copy(tree) if self.multi_process else tree

"""The run session: the members' folders, the signal guard, the heartbeat, and the statuses,
written last.

From the moment a run folder is written until the session ends, its status is true: `running`
with a heartbeat while it lives, then `completed`, `failed` (with the error) or `preempted`,
written only after every checkpoint, metric row and summary is on disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from gmf_jax import distributed, failpoints
from gmf_jax.runlog import RunFolder, new_run_dir, open_run_folder
from gmf_jax.runlog.liveness import Heartbeat
from gmf_jax.runlog.record import FollowerFolder, check_run_folder
from gmf_jax.train.preemption import Preempted, PreemptionGuard

log = logging.getLogger("gmf_jax")


def checked_workdirs(setups, exps, resolved: list[dict[str, Any]]) -> list[str]:
  """Every member's folder, named and checked before any is written. Several processes:
  process 0 names and checks them; every process learns the names and the outcome from it (an
  error stops all of them, before any compute)."""
  workdirs = distributed.agree(lambda: [os.path.abspath(s.workdir or new_run_dir(e.config.name))
                                        for s, e in zip(setups, exps, strict=True)])

  def check() -> None:
    for setup, path, r in zip(setups, workdirs, resolved, strict=True):
      if setup.train:
        check_run_folder(path, r)

  distributed.agree(check)
  return workdirs


def open_folders(setups, workdirs: list[str], resolved) -> list[RunFolder | None]:
  """The run folders of the members that train (None for the others), written by process 0;
  the other processes follow them."""
  folders: list[RunFolder | None] = []

  def open_all() -> list[bool | None]:
    for setup, path, r in zip(setups, workdirs, resolved, strict=True):
      folders.append(open_run_folder(path, r, setup.config_file, setup.variant)
                     if setup.train else None)
    return [None if f is None else f.resumed for f in folders]

  resumed = distributed.agree(open_all)
  if not distributed.is_primary():
    folders = [None if r is None else FollowerFolder(path, r)
               for path, r in zip(workdirs, resumed, strict=True)]
  return folders


class RunSession:
  """Runs a population's training inside its folders and records the outcome whatever happens.

  Every part the training opened is closed by `record.finish` first; the statuses come after,
  so `preempted` and `completed` mean the checkpoints are on disk.
  """

  def __init__(self, record, guard: PreemptionGuard, heartbeat: Heartbeat,
               interrupted: Callable[[], str]):
    """`interrupted()`: the message of a run stopped at once by a second Ctrl-C."""
    self.record, self.guard, self.heartbeat = record, guard, heartbeat
    self.interrupted = interrupted

  def run(self, train: Callable[[], None], info: Callable[[], dict[str, Any]]) -> None:
    """Calls `train()`, then finishes the record with `info()` and writes every status.

    Raises:
      What `train` raised (after the statuses are written), or an error that makes the record
      untrue (a checkpoint promised but not saved).
    """
    record, error = self.record, None
    try:
      self.heartbeat.start()
      failpoints.reach("run_folder")
      train()
      record.set_status("completed", None)  # members that failed on their own stay failed
    except Preempted as e:
      error = e
      record.set_status("preempted", str(e))
    except KeyboardInterrupt as e:  # a second Ctrl-C: no checkpoint of this step
      error = e
      record.set_status("preempted", self.interrupted())
    except BaseException as e:  # noqa: BLE001 - recorded, then raised again below
      error = e
      record.set_status("failed", f"{type(e).__name__}: {e}")
    problem = None
    try:
      problem = record.finish(info, self.guard.protected)
    finally:  # the status is written whatever happened, and a second Ctrl-C cannot cut it
      with self.guard.protected():
        self.heartbeat.stop()
        for m in record.members:
          m.folder.set_status(m.status, error=m.error)
      # Several processes: the others wait (with no time limit) until process 0 has written
      # the record; JAX's own exit barrier would give up on a slow one after 5 minutes.
      distributed.barrier("gmf_jax-run-recorded")
    if problem is not None and (error is None or isinstance(error, Preempted)):
      raise problem from error  # a checkpoint that was promised is not there
    if error is not None:
      raise error

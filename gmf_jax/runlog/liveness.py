"""Is a run alive? The process identity and heartbeat a live run keeps in `metadata.json`.

A run writes `status: running` when it starts and its final status (`completed`, `failed`,
`preempted`, or `stopped` for a sweep member ended by early termination) when it ends. A
process killed by `kill -9`, the OOM killer or a lost node never
writes the second, so `running` alone cannot tell a live run from a dead one. While a run
lives, a background thread rewrites `metadata.json`'s `heartbeat` every `HEARTBEAT_SEC`
seconds (about 0.2 ms each, under the lock the training thread takes for its own rare
metadata writes), beside the `process` that owns the run (pid, host, boot id, pid namespace,
the pid's start time). `effective_status(run_dir)` reads both: on the host that owns the run
the process decides (gone: `crashed`; alive, even suspended: `running`); elsewhere the
heartbeat does (older than `STALE_SEC`: `crashed`).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
from typing import Any

HEARTBEAT_SEC = 5.0  # how often a live run rewrites its heartbeat
STALE_SEC = 60.0  # older than this, a heartbeat means the run is gone (also across hosts)
# What metadata.json's status holds; `stopped`: a sweep's early termination ended the member.
RECORDED = ("running", "completed", "failed", "preempted", "stopped")
STATUSES = (*RECORDED, "crashed")  # what effective_status returns (and "unknown")


def _read(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return None


def _start_ticks(pid: int) -> int | None:
  """When process `pid` started, in clock ticks since boot (Linux); None where unknown.

  With the boot id, it tells a live process from a later one that reuses its pid.
  """
  stat = _read(f"/proc/{pid}/stat")
  if not stat:
    return None
  try:  # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])
  except (IndexError, ValueError):
    return None


def _pid_namespace() -> str | None:
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return None


def process_identity() -> dict[str, Any]:
  """This process: pid, hostname, boot id, pid namespace and start time (what
  `effective_status` checks)."""
  boot = _read("/proc/sys/kernel/random/boot_id")
  return {"pid": os.getpid(), "hostname": socket.gethostname(),
          "boot_id": boot.strip() if boot else None, "pid_namespace": _pid_namespace(),
          "start_ticks": _start_ticks(os.getpid())}


def _sees_its_pid(identity: dict[str, Any]) -> bool:
  """Whether this process can look the run's pid up: the same host, booted once, and the
  same pid namespace (containers sharing a host and boot id have their own pids)."""
  here = process_identity()
  return all(identity.get(k) is None or identity.get(k) == here[k]
             for k in ("boot_id", "pid_namespace")) and identity.get("hostname") == here[
                 "hostname"]


def _process_alive(identity: dict[str, Any]) -> bool:
  """Whether the process `identity` names still runs (call only for this host)."""
  pid = identity.get("pid")
  if not isinstance(pid, int):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process: it exists
    pass
  started = identity.get("start_ticks")
  return started is None or _start_ticks(pid) in (None, started)


def heartbeat_record(step: int | None, every: float = HEARTBEAT_SEC) -> dict[str, Any]:
  now = time.time()
  return {"unix": now, "every_sec": every, "step": step,
          "time": datetime.datetime.fromtimestamp(now).astimezone().isoformat(
              timespec="seconds")}


def liveness(metadata: dict[str, Any], *, now: float | None = None,
             stale_after: float = STALE_SEC) -> tuple[str, str]:
  """The effective status of a run's metadata, and why (for messages).

  Returns:
    (status, reason): for a recorded `running`, on the host (and pid namespace) that owns the
    run the process decides: gone (or its pid reused) is `crashed`, alive is `running`, even
    with an old heartbeat (a suspended job). Elsewhere, a heartbeat older than `stale_after`
    seconds is `crashed`. A record with neither a process nor a heartbeat (a lost
    metadata.json, or one written by an older gmf_jax) is `crashed`: nothing can show it lives.
  """
  status = metadata.get("status") or "running"
  if status != "running":
    return status, f"recorded as {status}"
  identity = metadata.get("process") or {}
  beat = metadata.get("heartbeat") or {}
  where = f"pid {identity.get('pid')} on {identity.get('hostname')}"
  has_beat = isinstance(beat.get("unix"), (int, float))
  age = (time.time() if now is None else now) - beat["unix"] if has_beat else None
  last = f"heartbeat {max(age, 0):.0f} s ago at step {beat.get('step')}" if has_beat else (
      "no heartbeat")
  if identity.get("pid") is not None and _sees_its_pid(identity):
    if _process_alive(identity):
      return "running", f"{where} is alive, {last}"
    return "crashed", f"{where} is gone"
  if not has_beat:
    return "crashed", "no process or heartbeat is recorded"
  if age > stale_after:
    return "crashed", f"its heartbeat ({where}) is {age:.0f} s old"
  return "running", f"{where}, {last}"


def effective_status(run_dir: str, *, stale_after: float = STALE_SEC) -> str:
  """The status of the run in `run_dir`, with dead runs told apart from live ones.

  One of `running` (its process lives), `completed`, `failed`, `preempted` (as recorded) or
  `crashed`: recorded as `running`, but its process is gone from this host (`kill -9`, the
  OOM killer) or, read from another host, its heartbeat is older than `stale_after` seconds
  (a lost node). A run folder without a readable `metadata.json` gives `unknown`. Rerun the
  run's command with the same --workdir to resume a crashed or preempted run.

  Args:
    run_dir: a run folder (holding metadata.json).
    stale_after: seconds after which a heartbeat counts as stopped.
  """
  try:
    with open(os.path.join(run_dir, "metadata.json")) as f:
      metadata = json.load(f)
  except (OSError, ValueError):
    return "unknown"
  return liveness(metadata, stale_after=stale_after)[0]


class Heartbeat:
  """Rewrites the run's heartbeat every `every` seconds from a daemon thread, until `stop`.

  The thread beats while the training thread waits inside a long jitted call or a compile;
  the loop only sets `step` (an attribute write) after each call.
  """

  def __init__(self, beat, every: float = HEARTBEAT_SEC):
    """`beat(step)` writes one heartbeat (RunFolder.beat)."""
    self.step: int | None = None
    self._beat = beat
    self._every = every
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._work, daemon=True, name="gmf_jax-heartbeat")

  def start(self) -> Heartbeat:
    self._thread.start()
    return self

  def _work(self) -> None:
    while not self._stop.wait(self._every):
      try:
        self._beat(self.step)
      except OSError:  # a full disk must not stop training; the next beat tries again
        pass

  def stop(self) -> None:
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()

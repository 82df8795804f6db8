"""End-of-run plots of a population's members, drawn in worker processes.

Drawing a member's PNGs takes a few tenths of a second of CPU, nearly all of it in
matplotlib's Python code, so threads would not help: for a population of 4 or more, the
members' plots are drawn by a few worker processes (`python -m gmf_jax.runlog.plot_pool`,
which import nothing but numpy and matplotlib, and never the user's script) instead of one
after another on the training thread. The workers start with the population, importing
matplotlib beside the compilation (which leaves a core idle), and wait for the end. Members get
`metrics.png` and `diagnostics.png` (loss and learning rate are panels of metrics.png). A run of
its own draws its plots in-process as before.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from typing import Any

log = logging.getLogger("gmf_jax")

_HEADER = struct.Struct("!I")


def _send(stream, obj: Any) -> None:
  data = pickle.dumps(obj)
  stream.write(_HEADER.pack(len(data)) + data)
  stream.flush()


def _receive(stream) -> Any:
  header = stream.read(_HEADER.size)
  if len(header) < _HEADER.size:
    raise EOFError("the plot worker closed its pipe")
  (size,) = _HEADER.unpack(header)
  return pickle.loads(stream.read(size))


class PlotPool:
  """A few worker processes for `plots.plot_metrics` of many runs."""

  def __init__(self, workers: int):
    self._tasks: queue.Queue = queue.Queue()
    self._procs = []
    self._threads = []
    for i in range(workers):
      proc = subprocess.Popen([sys.executable, "-m", "gmf_jax.runlog.plot_pool"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
      thread = threading.Thread(target=self._feed, args=(proc,), daemon=True,
                                name=f"gmf_jax-plot-worker-{i}")
      thread.start()
      self._procs.append(proc)
      self._threads.append(thread)

  def _feed(self, proc: subprocess.Popen) -> None:
    """Hands tasks to one worker, one at a time, and resolves their futures."""
    while True:
      task = self._tasks.get()
      if task is None:
        return
      future, message = task
      if not future.set_running_or_notify_cancel():
        continue
      try:
        _send(proc.stdin, message)
        status, value = _receive(proc.stdout)
      except Exception as e:  # noqa: BLE001 - a dead worker: the caller plots in-process
        future.set_exception(e)
        continue
      if status == "ok":
        future.set_result(value)
      else:
        future.set_exception(RuntimeError(value))

  def _submit(self, message: tuple) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._tasks.put((future, message))
    return future

  def submit(self, metrics_csv: str, out_dir: str, title: str) -> concurrent.futures.Future:
    """A future of the paths `plots.plot_metrics` writes (the members' figures)."""
    return self._submit(("plot", (metrics_csv, out_dir, title)))

  def close(self) -> None:
    """Waits for every submitted task, then ends the workers."""
    for _ in self._threads:
      self._tasks.put(None)
    for thread in self._threads:
      thread.join()
    for proc in self._procs:
      try:
        proc.stdin.close()
        proc.wait(timeout=10)
      except Exception:  # noqa: BLE001
        proc.kill()


def workers_for(size: int) -> int:
  """Worker processes for a population of `size` (0: plot in-process)."""
  if size < 4:
    return 0
  return max(1, min(size // 2, os.cpu_count() or 1, 4))


def _serve() -> None:
  """A worker: reads tasks from stdin, answers on stdout, until stdin closes."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  sys.stdout = sys.stderr  # nothing printed may corrupt the answers
  from gmf_jax.runlog import plots

  plots.warm_up().join()
  while True:
    try:
      kind, args = _receive(stdin)
    except EOFError:
      return
    try:
      if kind == "plot":
        metrics_csv, out_dir, title = args
        value = plots.plot_metrics(metrics_csv, out_dir, title=title,
                                   figures=plots.MEMBER_FIGURES)
      else:
        raise ValueError(f"unknown task {kind!r}")
      answer = ("ok", value)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which plots in-process
      answer = ("error", f"{type(e).__name__}: {e}")
    _send(stdout, answer)


if __name__ == "__main__":
  _serve()

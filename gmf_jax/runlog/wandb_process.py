"""wandb in a process of its own, shared by every wandb run of the training process.

Every wandb call (import, `init`, `log`, `finish`) is made in a helper process, so that what
wandb costs reaches training as one message per call. In the training process wandb ran in
Python threads, which hold the GIL that the training loop needs between chunks: with a
population of 16 members on 2 cores, wandb's import, its 16 run starts and its logging added
about 3 s to a 14 s run. The helper process starts as soon as a run knows that it will use wandb
(`start`), and imports wandb and opens the runs while the training process builds and compiles
its program, which keeps one core busy, not two.

The training process talks to it over one connection per wandb run (a Unix socket, with a
random key). Requests are answered in order, each with `("ok", value)` or
`("error", type name, message)`:

  ("init", mode, settings, kwargs) -> the run's id (repeatable after a failure: online, then
                                      offline)
  ("log", [(step, scalars), ...])  -> None (one wandb `log` per row, in order)
  ("images", step, paths)          -> None (PNG files, read by wandb)
  ("finish", exit_code)            -> the CPU seconds the helper process has used so far

A connection that ends without "finish" (the training process died, or was killed) finishes its
run with exit code 1. The helper ignores SIGINT and SIGTERM (the training process finishes the
runs itself when it is stopped), and ends when its standard input closes: when the training
process exits, however it ends.

This module is also the helper's program: it runs as a script (`python -P wandb_process.py
ADDRESS`) and imports nothing but the standard library before wandb.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

NICENESS = 10  # the helper's scheduling priority, below the training process's


class RemoteError(Exception):
  """An error raised in the wandb process; `kind` is its type's name (e.g. 'CommError')."""

  def __init__(self, kind: str, message: str):
    super().__init__(message)
    self.kind = kind


# ------------------------------------------------------------------------ the training process


class _Helper:
  """The training process's side: starts the helper process once, and connects runs to it."""

  def __init__(self):
    self._lock = threading.Lock()
    self._proc: subprocess.Popen | None = None
    self._folder = self._address = self._key = None
    self._ready = False
    self._at_exit = False
    self.connections: set[Connection] = set()  # open ones, closed at `stop`

  def start(self) -> None:
    """Starts the helper process, unless it runs already; returns at once."""
    with self._lock:
      if self._proc is not None and self._proc.poll() is None:
        return
      self._forget()
      self._folder = tempfile.mkdtemp(prefix="gmf_jax-wandb-")
      self._address = os.path.join(self._folder, "socket")
      self._key = os.urandom(32)
      self._proc = subprocess.Popen(
          [sys.executable, "-P", os.path.abspath(__file__), self._address],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
      self._proc.stdin.write(self._key.hex().encode() + b"\n")
      self._proc.stdin.flush()
      self._ready = False
      if not self._at_exit:
        atexit.register(self.stop)
        self._at_exit = True

  def connect(self) -> Connection:
    """A connection for one run; starts the helper process where it is not running."""
    self.start()
    with self._lock:
      proc = self._proc
      if not self._ready:
        if proc.stdout.readline().strip() != b"ready":  # EOF: it ended while starting
          raise RemoteError("WandbProcessError",
                            f"the wandb process ended as it started (exit code {proc.wait()})")
        self._ready = True
        proc.stdout.close()
      conn = Client(self._address, family="AF_UNIX", authkey=self._key)
      self.connections.add(conn)
      return conn

  def describe_end(self) -> RemoteError:
    """The error for a connection that broke: the helper process ended, or its socket did."""
    code = self._proc.poll() if self._proc is not None else None
    return RemoteError("WandbProcessError", "the wandb process ended" +
                       (f" (exit code {code})" if code is not None else ""))

  def close(self, conn: Connection) -> None:
    self.connections.discard(conn)
    conn.close()

  def stop(self, timeout: float = 60) -> None:
    """Closes the helper's standard input and waits for it to end (at the process's exit)."""
    with self._lock:
      self._forget(timeout)

  def _forget(self, timeout: float = 60) -> None:
    for conn in list(self.connections):  # runs never finished: the helper finishes them
      self.close(conn)
    if self._proc is not None:
      try:
        self._proc.stdin.close()
        self._proc.wait(timeout)
      except (OSError, subprocess.TimeoutExpired):
        self._proc.kill()
      self._proc = None
    if self._folder is not None:
      shutil.rmtree(self._folder, ignore_errors=True)
      self._folder = None


_helper = _Helper()
start = _helper.start


class RunConnection:
  """One wandb run in the helper process, called as if it were here; errors raise RemoteError."""

  def __init__(self):
    self._conn = _helper.connect()

  def call(self, op: str, *args: Any) -> Any:
    try:
      self._conn.send((op, *args))
      answer = self._conn.recv()
    except (EOFError, OSError) as e:
      raise _helper.describe_end() from e
    if answer[0] == "error":
      raise RemoteError(answer[1], answer[2])
    return answer[1]

  def close(self) -> None:
    _helper.close(self._conn)


# ------------------------------------------------------------------------ the helper process


class _Wandb:
  """wandb, imported in the background as the helper starts; the count of open runs."""

  def __init__(self):
    self._imported = threading.Event()
    self._module = self._error = None
    self._lock = threading.Lock()
    self.open_runs = 0
    threading.Thread(target=self._import, daemon=True).start()

  def _import(self) -> None:
    try:
      import wandb

      self._module = wandb
    except BaseException as e:  # noqa: BLE001 - answered to every init
      self._error = e
    self._imported.set()

  def module(self):
    self._imported.wait()
    if self._error is not None:
      raise self._error
    return self._module

  def opened(self, delta: int) -> bool:
    """Counts a run opened (+1) or ended (-1); returns whether none is open any more."""
    with self._lock:
      self.open_runs = max(0, self.open_runs + delta)
      return self.open_runs == 0

  def teardown_if_idle(self) -> None:
    """Shuts down wandb's service after the last run (its exit hook would otherwise complain)."""
    if self.opened(0) and self._module is not None:
      try:
        self._module.teardown()
      except BaseException:  # noqa: BLE001 - nothing is open; nothing more to report
        pass


def _init(wandb_: _Wandb, mode: str, settings: dict, kwargs: dict):
  wandb = wandb_.module()
  wandb_.opened(+1)
  try:
    return wandb.init(mode=mode, settings=wandb.Settings(**settings), **kwargs)
  except BaseException:
    wandb_.opened(-1)
    wandb_.teardown_if_idle()
    raise


def _serve_run(conn: Connection, wandb_: _Wandb) -> None:
  """Answers one run's requests in order, until "finish" or the end of the connection."""
  run = None
  try:
    while True:
      try:
        op, *args = conn.recv()
      except (EOFError, OSError):
        return  # the training process ended: `finally` finishes the run
      try:
        if op == "init":
          run = _init(wandb_, *args)
          value = run.id
        elif op == "log":
          for step, scalars in args[0]:
            run.log(dict(scalars), step=step)
          value = None
        elif op == "images":
          wandb = wandb_.module()
          run.log({k: wandb.Image(p) for k, p in args[1].items()}, step=args[0])
          value = None
        elif op == "finish":
          finishing, run = run, None
          _finish(finishing, args[0], wandb_)
          value = time.process_time()
        else:
          raise ValueError(f"unknown request {op!r}")
      except BaseException as e:  # noqa: BLE001 - even wandb's SystemExit is an answer
        _answer(conn, ("error", type(e).__name__, str(e).splitlines()[0][:500] if str(e) else ""))
        if op == "finish":
          return
        continue
      _answer(conn, ("ok", value))
      if op == "finish":
        return
  finally:
    if run is not None:
      try:
        _finish(run, 1, wandb_)
      except BaseException:  # noqa: BLE001 - nobody is left to tell
        pass
    conn.close()


def _finish(run, exit_code: int, wandb_: _Wandb) -> None:
  try:
    run.finish(exit_code=exit_code)
  finally:
    wandb_.opened(-1)
    wandb_.teardown_if_idle()


def _answer(conn: Connection, answer: tuple) -> None:
  try:
    conn.send(answer)
  except OSError:  # the training process ended meanwhile
    pass


def serve(address: str) -> None:
  """The helper's main: listens for runs until its standard input closes."""
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
  # wandb holds a copy of the record and is never urgent: where training keeps every core
  # busy, it works in the gaps rather than taking a core from training.
  os.nice(NICENESS)
  key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
  listener = Listener(address, family="AF_UNIX", authkey=key)
  wandb_ = _Wandb()
  served: list[threading.Thread] = []

  def accept() -> None:
    while True:
      try:
        conn = listener.accept()
      except Exception:  # noqa: BLE001 - a client that failed the key: not one of ours
        continue
      thread = threading.Thread(target=_serve_run, args=(conn, wandb_), daemon=True)
      served.append(thread)
      thread.start()

  threading.Thread(target=accept, daemon=True).start()
  sys.stdout.buffer.write(b"ready\n")
  sys.stdout.buffer.flush()
  os.dup2(2, 1)  # whatever wandb prints goes where the training process's errors go
  sys.stdin.buffer.read()  # until the training process closes it, or ends
  for thread in list(served):  # connections end with it: each finishes its run
    thread.join(timeout=120)
  wandb_.teardown_if_idle()
  os._exit(0)  # wandb's own exit hooks have nothing left to do


if __name__ == "__main__":
  serve(sys.argv[1])

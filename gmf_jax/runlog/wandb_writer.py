"""Weights & Biases: offline by default, online only when asked; never stops training.

The run folder (metrics.csv, summary.json, plots) is the run's record; wandb holds a copy. So a
wandb failure, whether it fails to start, to log or to finish, is one warning, after which wandb
is dropped for the rest of the run and training goes on. (Online, a server that cannot be reached
is not a failure: wandb warns and goes on offline.)
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("gmf_jax")

MODES = ("offline", "online", "disabled")


def wandb_mode(configured: str) -> str:
  """WANDB_MODE, when set, wins over the config (so a cluster script can turn wandb off)."""
  return os.environ.get("WANDB_MODE") or configured


def _describe(e: BaseException) -> str:
  """`Type: first line of the message`, short enough for one log line."""
  text = str(e).splitlines()[0][:200] if str(e) else ""
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


class WandbWriter:
  """Logs metrics and images to a wandb run kept in `<workdir>/wandb/`.

  Its methods raise whatever wandb raises; `BackgroundWandb` is what keeps that from the
  training loop.
  """

  def __init__(self, run):
    self.run = run
    # Read here, in the thread that opened the run, so that `on_ready` touches no wandb code.
    self.run_id: str = run.id

  @classmethod
  def open(cls, wandb_config: Mapping[str, Any], workdir: str, config: dict[str, Any],
           run_id: str | None, requirements: bool = True) -> WandbWriter | None:
    """Starts (or, with `run_id`, resumes) the wandb run; None when wandb is disabled.

    If the server cannot be reached in online mode, warns once and goes on offline.
    `requirements`: wandb lists the installed packages in the run (`requirements.txt`). That
    costs about 0.4 s per run: a population's members after the first skip it, as they share
    the first's process and environment (every run folder's metadata.json has the versions).

    Raises:
      Whatever `wandb.init` raises when the run cannot start (offline, or online and then
      offline). wandb is torn down first, quietly, so that nothing it started (such as its
      service process) stays running.
    """
    mode = wandb_mode(wandb_config["mode"])
    if mode == "disabled":
      return None
    import wandb  # slow import; only when wandb is on

    kwargs = dict(
        project=wandb_config["project"], entity=wandb_config["entity"],
        group=wandb_config["group"], tags=list(wandb_config["tags"]) or None,
        name=wandb_config["name"] or os.path.basename(workdir), notes=wandb_config["notes"],
        config=config, dir=workdir, id=run_id, resume="allow" if run_id else None,
    )
    settings = wandb.Settings(
        init_timeout=float(wandb_config["init_timeout"]), console="off", silent=True,
        x_disable_stats=True, save_code=False, x_save_requirements=requirements,
        reinit="create_new",  # the members of a population are runs side by side
    )
    _open_runs.acquire()
    try:
      try:
        run = wandb.init(mode=mode, settings=settings, **kwargs)
      except Exception as e:  # noqa: BLE001 - online falls back to offline
        if mode != "online":
          raise
        log.warning("warning: wandb could not start online (%s); logging offline to %s "
                    "instead (`wandb sync` uploads it later).", _describe(e),
                    os.path.join(workdir, "wandb"))
        run = wandb.init(mode="offline", settings=settings, **kwargs)
    except BaseException:
      if _open_runs.release():
        _teardown_quietly()
      raise
    return cls(run)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self.run.log(dict(scalars), step=int(step))

  def write_images(self, step: int, paths: Mapping[str, str]) -> None:
    import wandb

    self.run.log({k: wandb.Image(p) for k, p in paths.items()}, step=int(step))

  def close(self, exit_code: int = 0) -> None:
    """Finishes the run and waits until its files are complete.

    wandb's service is shut down even when finishing fails: its exit hook would otherwise print
    a traceback of its own when the process ends.
    """
    import wandb

    try:
      self.run.finish(exit_code=exit_code)
    finally:
      if _open_runs.release():  # the last run of this process
        wandb.teardown()


class _OpenRuns:
  """Counts this process's open wandb runs: wandb's service is shut down after the last."""

  def __init__(self):
    self._count = 0
    self._lock = threading.Lock()

  def acquire(self) -> None:
    with self._lock:
      self._count += 1

  def release(self) -> bool:
    """Returns whether no run is open any more."""
    with self._lock:
      self._count = max(0, self._count - 1)
      return self._count == 0


_open_runs = _OpenRuns()


def _teardown_quietly() -> None:
  """Shuts down whatever wandb has started, ignoring its errors (it has already failed)."""
  try:
    import wandb

    wandb.teardown()
  except BaseException:  # noqa: BLE001 - wandb has failed already; nothing more to report
    pass


# What happens after each kind of failure, for its warning.
_AFTER = {
    "start": "training goes on without wandb",
    "log": "nothing more goes to wandb in this run",
    "finish": "wandb's copy of the run may be incomplete",
}


class BackgroundWandb:
  """A wandb run driven from a background thread, which never raises in the caller's thread.

  The run starts there (a service process, about half a second, overlapping compilation), and
  every write is a queue put for the caller: wandb's own `log` costs about a millisecond of the
  calling thread, which the training loop would otherwise spend between chunks. Writes made
  before the run is open wait in the queue, in order; `close` waits for them, then finishes the
  run, in the background thread too.

  `open_fn()` returns the writer (`write`, `write_images`, `close(exit_code)`, `run_id`), or None
  when wandb is off; `on_ready(writer)` is called once, from the caller's thread, at the first
  `write`, `write_images` or `close` after the run is open (an error of `on_ready`'s own is the
  caller's, and propagates).

  When wandb fails to start, to log or to finish, that becomes one warning on the `gmf_jax`
  logger, and `error` says what failed; from then on writes are dropped, and `on_ready`, if not
  called yet, is not called. After a failure to log, `close` still tries to finish the run (so
  that `<workdir>/wandb/` holds a finished run when wandb can still manage it), quietly.
  """

  def __init__(self, open_fn: Callable[[], Any], on_ready: Callable[[Any], None]):
    self._writer = None
    self._error: str | None = None
    self._on_ready = on_ready
    self._ready = False
    self.thread_cpu_sec = 0.0  # the CPU time of the background thread, known after `close`
    self._opened = threading.Event()
    self._queue: queue.SimpleQueue = queue.SimpleQueue()
    self._held: tuple[int, dict] | None = None  # the last step's rows, merged (see `write`)
    self._thread = threading.Thread(target=self._work, args=(open_fn,), daemon=True,
                                    name="gmf_jax-wandb")
    self._thread.start()

  @property
  def error(self) -> str | None:
    """None while wandb works (or is off); after a failure, e.g. 'log: ConnectionResetError: ...'.

    Set by the background thread as the failure happens, so it is final only after `close`.
    """
    return self._error

  def _fail(self, what: str, e: BaseException) -> None:
    self._error = f"{what}: {_describe(e)}"
    log.warning("warning: wandb failed to %s (%s); %s; the run folder has every metric.", what,
                _describe(e), _AFTER[what])

  def _work(self, open_fn: Callable[[], Any]) -> None:
    """Opens the run, writes what is queued until `close`'s item, then finishes the run.

    Every wandb call is made here, where any error, even SystemExit (wandb's teardown calls
    `sys.exit` when its service process ended with an error), becomes at most one warning.
    """
    try:
      self._writer = open_fn()
    except BaseException as e:  # noqa: BLE001 - wandb must never stop a run
      self._fail("start", e)
    finally:
      self._opened.set()
    while (item := self._queue.get())[0] != "close":
      if self._writer is not None and self._error is None:  # else dropped
        self._call("log", *item)
    if self._writer is not None:
      self._call("finish", *item)  # also after a failure to log: the run may still finish
    self.thread_cpu_sec = time.thread_time()

  def _call(self, what: str, method: str, args: tuple) -> None:
    try:
      getattr(self._writer, method)(*args)
    except BaseException as e:  # noqa: BLE001 - wandb must never stop a run
      if self._error is None:  # one warning per run
        self._fail(what, e)

  def _accepting(self) -> bool:
    """Whether a write should be queued; calls `on_ready` once the run is open."""
    if self._error is not None:
      return False
    if self._opened.is_set():
      if self._writer is None:
        return False  # wandb is off
      if not self._ready:
        self._ready = True
        self._on_ready(self._writer)
    return True

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Queues `step`'s rows. Rows of one step written one after another (a chunk's last train
    rows, then the evaluation and the diagnostics at its end) go to wandb as one `log` call: a
    call costs about 0.7 ms of CPU whatever it holds, 64 members make thousands of them, and
    wandb merges rows of one step anyway. The step's rows are held until a write of another
    step, an image or `close`."""
    if not self._accepting():
      return
    if self._held is not None and self._held[0] == step:
      self._held[1].update(scalars)
      return
    self._release()
    self._held = (step, dict(scalars))

  def _release(self) -> None:
    if self._held is not None:
      self._queue.put(("write", self._held))
      self._held = None

  def write_images(self, step: int, paths: Mapping[str, str]) -> None:
    if self._accepting():
      self._release()
      self._queue.put(("write_images", (step, dict(paths))))

  def request_close(self, exit_code: int = 0) -> None:
    """Asks the run to finish after every queued write, without waiting (`close` waits): the
    members of a population finish their wandb runs side by side."""
    if not getattr(self, "_close_requested", False):
      self._close_requested = True
      self._release()
      self._queue.put(("close", (exit_code,)))

  def close(self, exit_code: int = 0) -> None:
    """Waits for every queued write, then for the run to finish; logs, never raises."""
    self.request_close(exit_code)
    self._thread.join()
    self._accepting()  # a run that opened after the last write still gets its `on_ready`

"""Weights & Biases: offline by default, online only when asked; never stops training.

The run folder (metrics.csv, summary.json, plots) is the run's record; wandb holds a copy. So a
wandb failure, whether it fails to start, to log or to finish, is one warning, after which wandb
is dropped for the rest of the run and training goes on. (Online, a server that cannot be reached
is not a failure: wandb warns and goes on offline.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from gmf_jax.job import job_arguments
from gmf_jax.runlog import wandb_process

log = logging.getLogger("gmf_jax")

MODES = ("offline", "online", "disabled")


def wandb_mode(configured: str) -> str:
  """WANDB_MODE, when set, wins over the config (so a cluster script can turn wandb off)."""
  return os.environ.get("WANDB_MODE") or configured


def start_wandb_early(config) -> None:
  """Starts the wandb process (`wandb_process.start`) as soon as a config is read, where the run
  logs to wandb and is the only process of its job (in a job of several, process 0 alone starts
  it, later): wandb then imports there while this process imports and builds the rest."""
  if (wandb_mode(config.wandb.mode) != "disabled"
      and job_arguments(config.get("distributed") or {}) is None):
    wandb_process.start()


def _describe(e: BaseException) -> str:
  """`Type: first line of the message`, short enough for one log line (for an error raised in
  the wandb process, the type is the one raised there)."""
  text = str(e).splitlines()[0][:200] if str(e) else ""
  name = e.kind if isinstance(e, wandb_process.RemoteError) else type(e).__name__
  return f"{name}: {text}" if text else name


class WandbWriter:
  """Logs metrics and images to a wandb run kept in `<workdir>/wandb/`.

  The run lives in the wandb process (`gmf_jax.runlog.wandb_process`), which every run of this
  process shares; each call here waits for its answer. Its methods raise what wandb raised there
  (as `RemoteError`); `BackgroundWandb` is what keeps that from the training loop.
  """

  def __init__(self, connection: wandb_process.RunConnection, run_id: str):
    self._connection = connection
    self.run_id = run_id
    self.process_cpu_sec: float | None = None  # the wandb process's CPU time, after `close`

  @classmethod
  def open(cls, wandb_config: Mapping[str, Any], workdir: str, config: dict[str, Any],
           run_id: str | None, requirements: bool = True) -> WandbWriter | None:
    """Starts (or, with `run_id`, resumes) the wandb run; None when wandb is disabled.

    If the server cannot be reached in online mode, warns once and goes on offline.
    `requirements`: wandb lists the installed packages in the run (`requirements.txt`). That
    costs about 0.4 s per run: a population's members after the first skip it, as they share
    the first's process and environment (every run folder's metadata.json has the versions).

    Raises:
      Whatever `wandb.init` raised when the run could not start (offline, or online and then
      offline), as `RemoteError`. wandb is then shut down in the wandb process, where no other
      run is open.
    """
    mode = wandb_mode(wandb_config["mode"])
    if mode == "disabled":
      return None
    kwargs = dict(
        project=wandb_config["project"], entity=wandb_config["entity"],
        group=wandb_config["group"], tags=list(wandb_config["tags"]) or None,
        name=wandb_config["name"] or os.path.basename(workdir), notes=wandb_config["notes"],
        config=config, dir=workdir, id=run_id, resume="allow" if run_id else None,
    )
    settings = dict(
        init_timeout=float(wandb_config["init_timeout"]), console="off", silent=True,
        x_disable_stats=True, save_code=False, x_save_requirements=requirements,
        reinit="create_new",  # the members of a population are runs side by side
    )
    connection = wandb_process.RunConnection()
    try:
      try:
        run_id = connection.call("init", mode, settings, kwargs)
      except wandb_process.RemoteError as e:  # online falls back to offline
        if mode != "online" or e.kind == "WandbProcessError":
          raise
        log.warning("warning: wandb could not start online (%s); logging offline to %s "
                    "instead (`wandb sync` uploads it later).", _describe(e),
                    os.path.join(workdir, "wandb"))
        run_id = connection.call("init", "offline", settings, kwargs)
    except BaseException:
      connection.close()
      raise
    return cls(connection, run_id)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self.write_rows([(step, scalars)])

  def write_rows(self, rows: list[tuple[int, Mapping[str, float]]]) -> None:
    """Several rows in one message, each its own wandb `log` call, in order."""
    self._connection.call("log", [(int(step), dict(scalars)) for step, scalars in rows])

  def write_images(self, step: int, paths: Mapping[str, str]) -> None:
    self._connection.call("images", int(step), dict(paths))

  def close(self, exit_code: int = 0) -> None:
    """Finishes the run and waits until its files are complete."""
    try:
      self.process_cpu_sec = self._connection.call("finish", exit_code)
    finally:
      self._connection.close()


# What happens after each kind of failure, for its warning.
_AFTER = {
    "start": "training goes on without wandb",
    "log": "nothing more goes to wandb in this run",
    "finish": "wandb's copy of the run may be incomplete",
}


class BackgroundWandb:
  """A wandb run driven from a background thread, which never raises in the caller's thread.

  The run starts there (in the wandb process, while the training process compiles), and every
  write is a queue put for the caller: even a call to the wandb process costs a fraction of a
  millisecond of the calling thread, which the training loop would otherwise spend between
  chunks. Writes made
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
    self._rows: list[tuple[int, dict]] = []  # held until `batched` ends (see `write`)
    self._batches = 0
    self._thread = threading.Thread(target=self._work, args=(open_fn,), daemon=True,
                                    name="gmf_jax-wandb")
    self._thread.start()

  @property
  def process_cpu_sec(self) -> float | None:
    """The CPU seconds of the wandb process (shared by this process's runs), after `close`."""
    return getattr(self._writer, "process_cpu_sec", None)

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

    Every call to the writer is made here, where any error becomes at most one warning.
    """
    try:
      self._writer = open_fn()
    except BaseException as e:  # noqa: BLE001 - wandb must never stop a run
      self._fail("start", e)
    finally:
      self._opened.set()
    while (item := self._queue.get())[0] != "close":
      if self._writer is None or self._error is not None:
        continue  # dropped
      if item[0] == "rows" and not hasattr(self._writer, "write_rows"):
        for row in item[1][0]:
          self._call("log", "write", row)
      else:  # rows in one message; or images
        self._call("log", "write_rows" if item[0] == "rows" else item[0], item[1])
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
    """Holds `step`'s rows, to send with others as one message: at the end of a `batched`
    block, an image or `close`. Rows of one step written one after another (a chunk's last
    train rows, then the evaluation and the diagnostics at its end) become one wandb `log`
    call: a call costs about 0.7 ms of the wandb process's CPU whatever it holds, 64 members
    make thousands of them, and wandb merges rows of one step anyway. So the last step's rows
    stay held past a batch's end, in case more of that step follow."""
    if not self._accepting():
      return
    if self._rows and self._rows[-1][0] == step:
      self._rows[-1][1].update(scalars)
    else:
      self._rows.append((step, dict(scalars)))
    if not self._batches:
      self._release(keep_last=True)

  @contextlib.contextmanager
  def batched(self):
    """Rows written inside go to the wandb process in one message, at the end (the training
    loop writes a member's rows of a chunk so: one wake-up of this run's thread per chunk)."""
    self._batches += 1
    try:
      yield
    finally:
      self._batches -= 1
      if not self._batches:
        self._release(keep_last=True)

  def _release(self, keep_last: bool = False) -> None:
    rows, self._rows = self._rows, self._rows[-1:] if keep_last else []
    if keep_last:
      rows = rows[:-1]
    if rows:
      self._queue.put(("rows", (rows,)))

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

"""Weights & Biases: offline by default, online only when asked; never stops training."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("gmf_jax")

MODES = ("offline", "online", "disabled")


def wandb_mode(configured: str) -> str:
  """WANDB_MODE, when set, wins over the config (so a cluster script can turn wandb off)."""
  return os.environ.get("WANDB_MODE") or configured


class WandbWriter:
  """Logs metrics and images to a wandb run kept in `<workdir>/wandb/`."""

  def __init__(self, run):
    self.run = run

  @classmethod
  def open(cls, wandb_config: Mapping[str, Any], workdir: str, config: dict[str, Any],
           run_id: str | None) -> WandbWriter | None:
    """Starts (or, with `run_id`, resumes) the wandb run; None when wandb is disabled.

    If the server cannot be reached in online mode, warns once and goes on offline.
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
        x_disable_stats=True, save_code=False,
    )
    try:
      run = wandb.init(mode=mode, settings=settings, **kwargs)
    except Exception as e:  # noqa: BLE001 - wandb must never stop a run
      if mode != "online":
        raise
      log.warning("warning: wandb cannot reach its server (%s: %s); logging offline to %s "
                  "instead (`wandb sync` uploads it later).", type(e).__name__,
                  str(e).splitlines()[0][:200] if str(e) else "", os.path.join(workdir, "wandb"))
      run = wandb.init(mode="offline", settings=settings, **kwargs)
    return cls(run)

  @property
  def run_id(self) -> str:
    return self.run.id

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self.run.log(dict(scalars), step=int(step))

  def write_images(self, step: int, paths: Mapping[str, str]) -> None:
    import wandb

    self.run.log({k: wandb.Image(p) for k, p in paths.items()}, step=int(step))

  def close(self, exit_code: int = 0) -> None:
    import wandb

    self.run.finish(exit_code=exit_code)
    wandb.teardown()  # waits until the run's files are complete


class BackgroundWandb:
  """A wandb run driven from a background thread.

  The run starts there (a service process, about half a second, overlapping compilation), and
  every write is a queue put for the caller: wandb's own `log` costs about a millisecond of the
  calling thread, which the training loop would otherwise spend between chunks. Writes made
  before the run is open wait in the queue, in order.

  `on_ready(writer)` is called once, from the caller's thread, once the run is open. An error
  of wandb's is raised in the caller's thread at the next write; at `close` it is logged, so a
  finished training run is never turned into a failed one by its logger.
  """

  def __init__(self, open_fn, on_ready):
    self._writer: WandbWriter | None = None
    self._error: BaseException | None = None
    self._on_ready = on_ready
    self._ready = False
    self.thread_cpu_sec = 0.0  # the CPU time of the background thread, known after `close`
    self._opened = threading.Event()
    self._queue: queue.SimpleQueue = queue.SimpleQueue()
    self._thread = threading.Thread(target=self._work, args=(open_fn,), daemon=True,
                                    name="gmf_jax-wandb")
    self._thread.start()

  def _work(self, open_fn) -> None:
    try:
      self._writer = open_fn()
    except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
      self._error = e
    finally:
      self._opened.set()
    while (item := self._queue.get()) is not None:
      if self._writer is None or self._error is not None:
        continue  # disabled, or failed: drop what is left
      method, args = item
      try:
        getattr(self._writer, method)(*args)
      except BaseException as e:  # noqa: BLE001
        self._error = e
    self.thread_cpu_sec = time.thread_time()

  def _check(self) -> None:
    """Raises a pending wandb error; calls `on_ready` once the run is open."""
    if self._error is not None:
      error, self._error = self._error, None
      raise error
    if not self._ready and self._opened.is_set():
      self._ready = True
      if self._writer is not None:
        self._on_ready(self._writer)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self._check()
    self._queue.put(("write", (step, dict(scalars))))

  def write_images(self, step: int, paths: Mapping[str, str]) -> None:
    self._check()
    self._queue.put(("write_images", (step, dict(paths))))

  def close(self, exit_code: int = 0) -> None:
    """Waits for every queued write, then finishes the run."""
    self._queue.put(None)
    self._thread.join()
    try:
      self._check()
      if self._writer is not None:
        self._writer.close(exit_code)
    except Exception as e:  # noqa: BLE001 - the run itself is recorded; wandb is a copy
      log.warning("warning: wandb failed (%s: %s); the run folder has every metric.",
                  type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")

"""End-of-run plots of a population's members, drawn in worker processes.

Drawing a member's PNGs takes a few tenths of a second of CPU, nearly all of it in
matplotlib's Python code, so threads would not help: for a population of 4 or more, the
members' plots are drawn by a few spawned worker processes (which import nothing but numpy and
matplotlib) instead of one after another on the training thread. The workers start, and warm
matplotlib's caches, while the last chunk runs; from then on they also draw the members'
diagnostic figures (the figure functions travel there with cloudpickle). Members get
`metrics.png` and `diagnostics.png` (loss and learning rate are panels of metrics.png). A run of
its own draws its plots in-process as before.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import signal

log = logging.getLogger("gmf_jax")


def _start_worker() -> None:
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
  from gmf_jax.runlog import plots

  plots.warm_up().join()


def _plot(metrics_csv: str, out_dir: str, title: str) -> list[str]:
  from gmf_jax.runlog import plots

  return plots.plot_metrics(metrics_csv, out_dir, title=title, figures=plots.MEMBER_FIGURES)


def _draw(blob: bytes, path: str) -> str:
  import cloudpickle

  from gmf_jax.runlog import plots

  return plots.save_png(cloudpickle.loads(blob)(), path)


# A figure function that captures more than this (e.g. a whole experiment) is drawn in-process.
MAX_FIGURE_BYTES = 4 << 20


def _ready() -> bool:
  return True


class PlotPool:
  """A few worker processes for `plots.plot_metrics` of many run folders."""

  def __init__(self, workers: int):
    context = multiprocessing.get_context("spawn")  # never fork a process running JAX
    self._pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_start_worker)
    self._warm = [self._pool.submit(_ready) for _ in range(workers)]  # start them now

  def submit(self, metrics_csv: str, out_dir: str, title: str) -> concurrent.futures.Future:
    return self._pool.submit(_plot, metrics_csv, out_dir, title)

  def draw(self, make_figure, path: str) -> concurrent.futures.Future | None:
    """Draws `make_figure()` into the PNG `path` in a worker; None when the function cannot
    travel there (then the caller draws it)."""
    import cloudpickle

    try:
      blob = cloudpickle.dumps(make_figure)
    except Exception:  # noqa: BLE001 - e.g. it holds a lock or a device buffer
      return None
    if len(blob) > MAX_FIGURE_BYTES:
      return None
    return self._pool.submit(_draw, blob, path)

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)


def workers_for(size: int) -> int:
  """Worker processes for a population of `size` (0: plot in-process)."""
  if size < 4:
    return 0
  return max(1, min(size // 2, os.cpu_count() or 1, 4))

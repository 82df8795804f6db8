"""Running due diagnostics between jitted calls and writing what they return."""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib

import jax
import numpy as np

from gmf_jax.diagnostics import ScheduledDiagnostic
from gmf_jax.diagnostics.base import DiagnosticResult
from gmf_jax.runlog.plots import save_png

log = logging.getLogger("gmf_jax")

DIAG_DIR = "diagnostics"


def probe_batch(exp, size: int) -> dict[str, jax.Array]:
  """The fixed probe: the first `size` examples of the test split, the same at every call."""
  split = exp.dataset.test
  return jax.device_put(dict(split.get(np.arange(min(size, len(split))))))


def diagnostic_rng(diag_key: jax.Array, name: str, step: int) -> jax.Array:
  """A key per (diagnostic, step), so a backfill reproduces what ran during training."""
  return _fold_twice(diag_key, np.uint32(zlib.crc32(name.encode()) & 0x7FFFFFFF),
                     np.uint32(step))


@jax.jit
def _fold_twice(key, a, b):  # one dispatch instead of two eager ones (bitwise the same)
  return jax.random.fold_in(jax.random.fold_in(key, a), b)


def run_due(diagnostics: list[ScheduledDiagnostic], step: int, state, probe, diag_key,
            workdir: str, writer, image_writer=None, force: bool = False) -> dict[str, float]:
  """Runs each diagnostic due at `step` (all of them with `force`) and writes its outputs.

  Returns:
    Seconds spent per diagnostic run, outputs included.
  """
  seconds = {}
  for diag in diagnostics:
    if force or diag.schedule.due(step):
      start = time.perf_counter()
      result = diag.run(state, probe, diagnostic_rng(diag_key, diag.name, step))
      write_result(diag.name, step, result, workdir, writer, image_writer)
      seconds[diag.name] = time.perf_counter() - start
  return seconds


def warm_up(diagnostics: list[ScheduledDiagnostic], state, probe, diag_key) -> threading.Thread:
  """Runs each diagnostic once, results discarded, in a background thread.

  Started once the first training call is compiled and running, it traces and compiles the
  diagnostics' jitted work beside it, on cycles training leaves idle (the default job keeps
  about 1.5 of 2 cores busy), so a diagnostic's first scheduled run costs no compilation.
  (Started any earlier, its Python tracing would hold up the training chunk's.) `state` must
  not be donated later (pass a copy); join the thread before the first scheduled run.
  """

  def work():
    for diag in diagnostics:
      try:
        diag.run(state, probe, diagnostic_rng(diag_key, diag.name, 0))  # figures left undrawn
      except Exception:  # noqa: BLE001 - the scheduled run will raise it where it is seen
        log.debug("warm-up of diagnostic %s failed", diag.name, exc_info=True)

  thread = threading.Thread(target=work, name="gmf_jax-diagnostics-warm-up", daemon=True)
  thread.start()
  return thread


def remove_outputs(workdir: str, name: str, step: int) -> None:
  """Deletes what diagnostic `name` wrote at `step` (its arrays and figures), before a rerun
  there writes them anew: a figure the new run does not draw must not linger as if it had."""
  import glob

  folder = os.path.join(workdir, DIAG_DIR, name)
  for path in [os.path.join(folder, f"step_{step}.npz"),
               *glob.glob(os.path.join(glob.escape(folder), f"step_{step}_*.png"))]:
    if os.path.exists(path):
      os.remove(path)


def write_result(name: str, step: int, result: DiagnosticResult, workdir: str, writer,
                 image_writer=None) -> None:
  """Scalars -> `diag/<name>/<key>` rows; arrays -> npz; figures -> PNG (and wandb images)."""
  folder = os.path.join(workdir, DIAG_DIR, name)
  if not os.path.isdir(folder):  # a stat: cheaper than makedirs, called per member and step
    os.makedirs(folder, exist_ok=True)
  if result.scalars:
    writer.write(step, {f"diag/{name}/{k}": float(v) for k, v in result.scalars.items()})
  if result.arrays:
    path = os.path.join(folder, f"step_{step}.npz")
    arrays = {k: np.asarray(v) for k, v in result.arrays.items()}
    # Small results are stored as they are: compressing costs more than it saves there.
    save = np.savez_compressed if sum(a.nbytes for a in arrays.values()) > (1 << 20) else np.savez
    with open(f"{path}.tmp", "wb") as f:  # a file object: a name would get `.npz` appended
      save(f, **arrays)
    os.replace(f"{path}.tmp", path)  # readers never see a half-written file
  images = {}
  for fig_name, fig in result.figures.items():
    fig = fig() if callable(fig) else fig  # drawn only when written (not in the warm-up)
    images[f"diag/{name}/{fig_name}"] = save_png(
        fig, os.path.join(folder, f"step_{step}_{fig_name}.png"))
  if images and image_writer is not None:
    image_writer.write_images(step, images)

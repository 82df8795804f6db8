"""Orbax checkpoints of the train state, with the loop's own small state beside it.

Two managers: `checkpoints/` keeps the latest `max_to_keep` steps (periodic, at the end, on
preemption); `best_checkpoint/` keeps the single step with the best eval metric. A step whose
save did not finish (a process killed mid-save) is never listed by orbax, and a step that fails
to restore (truncated or corrupt files) is skipped with a warning for the one before it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from gmf_jax import distributed, failpoints

log = logging.getLogger("gmf_jax")

LATEST_DIR = "checkpoints"
BEST_DIR = "best_checkpoint"


class Checkpointer:
  """Saves and restores `(state, meta)`: a pytree and a JSON-able dict, at a step."""

  def __init__(self, workdir: str, max_to_keep: int, async_save: bool = True):
    workdir = os.path.abspath(workdir)  # orbax takes absolute paths only; callers pass any
    # Several processes agree on each save through barriers named by step; the two managers
    # may save the same step, so each names its own.
    options = lambda keep, name: ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
    )
    self.latest = ocp.CheckpointManager(os.path.join(workdir, LATEST_DIR),
                                        options=options(max_to_keep, LATEST_DIR))
    self.best = ocp.CheckpointManager(os.path.join(workdir, BEST_DIR),
                                      options=options(1, BEST_DIR))
    # Steps saved or being saved (an asynchronous save is listed by orbax only once done).
    self._saved = {False: set(self.latest.all_steps()), True: set(self.best.all_steps())}

  def save(self, step: int, state: Any, meta: dict[str, Any], *, best: bool = False) -> None:
    """Starts an asynchronous save; returns once the arrays are copied off the device.

    orbax copies the arrays to host memory before it returns (the blocking part of an async
    save), so the caller may donate their buffers to the next jitted call while the files are
    written in the background. Each process copies and writes only its own shards: the state
    is never gathered on one host. A step already saved (or being saved) is not saved again.
    """
    if self.has(step, best=best):
      return
    manager = self.best if best else self.latest
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self._saved[best].add(step)
    # A test's fault lands while the files are written.
    failpoints.reach("best_checkpoint_save" if best else "checkpoint_save")

  def has(self, step: int, *, best: bool = False) -> bool:
    """Whether `step` is saved, or being saved, in this manager."""
    return step in self._saved[best]

  def steps(self) -> list[int]:
    return sorted(self.latest.all_steps())

  def restore(self, step: int, like: Any, *, best: bool = False) -> tuple[Any, dict[str, Any]]:
    """Restores one step (of the best checkpoint, with `best`) into the structure of `like`;
    errors propagate."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    manager = self.best if best else self.latest
    restore = lambda target: manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    try:
      restored = restore(abstract)
      return restored.state, dict(restored.meta)
    except ValueError:
      saved = self._saved_fields(manager, step)
      older = _fields_saved(abstract, saved)
      if older is None:
        raise
    restored = restore(older)  # a checkpoint from before the fields it lacks were added
    return abstract.replace(**restored.state), dict(restored.meta)

  @staticmethod
  def _saved_fields(manager, step: int) -> set[str] | None:
    """The top-level names of a saved state's tree (None if they cannot be read)."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax warns of a metadata file older checkpoints lack
    try:
      with ocp.StandardCheckpointer() as reader:
        tree = reader.metadata(os.path.join(str(manager.directory), str(step), "state"))
      tree = getattr(tree, "item_metadata", tree)
      return set(tree.keys())
    except Exception:  # noqa: BLE001 - no metadata to read: the first error stands
      return None
    finally:
      absl.setLevel(level)

  def restore_latest(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """Restores the newest step that reads back whole, trying older ones after a failure.

    Args:
      like: a state with the structure, shapes and dtypes to restore into.

    Returns:
      (step, state, meta), or None when there is no usable checkpoint.
    """
    # Made abstract out here (restore's own conversion leaves it as is), so a `like` that
    # cannot be converted raises instead of setting every checkpoint aside.
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    for step in sorted(self.latest.all_steps(), reverse=True):
      error = None
      try:
        state, meta = self.restore(step, abstract)
      except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to the previous
        error = e
      # Several processes each read their own shards: they fall back together, or not at all.
      if distributed.everyone(error is None):
        return step, state, meta
      moved = self._set_aside(step) if distributed.is_primary() else "the side"
      distributed.barrier(f"gmf_jax-set-aside-{step}")
      if not distributed.is_primary():
        self.latest.reload()
        self._saved[False].discard(step)
      reason = "another process could not read its part" if error is None else (
          f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}")
      log.warning("warning: checkpoint at step %d cannot be restored (%s); moved it to %s and "
                  "trying the previous one.", step, reason, moved)
    return None

  def _set_aside(self, step: int) -> str:
    """Renames an unreadable step's folder (kept for inspection), so the step can be saved anew."""
    folder = os.path.join(str(self.latest.directory), str(step))
    target = f"{folder}.unreadable-{int(time.time())}"
    os.rename(folder, target)
    self.latest.reload()
    self._saved[False].discard(step)
    return target

  def wait(self) -> None:
    """Blocks until every started save is on disk; errors in the background surface here."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    self.best.close()


def _fields_saved(abstract: Any, saved: set[str] | None) -> dict[str, Any] | None:
  """A restore target for a checkpoint written before some of `abstract`'s fields existed
  (e.g. `TrainState.model_state`, added with model state): `abstract`'s pytree fields as a
  dict without the ones the checkpoint lacks. None unless every field it lacks is empty in
  `abstract` (a newer field this run does not use); a field holding arrays must be restored."""
  if saved is None or not dataclasses.is_dataclass(abstract):
    return None
  fields = [f.name for f in dataclasses.fields(abstract) if f.metadata.get("pytree_node", True)]
  missing = [f for f in fields if f not in saved]
  if not missing or any(jax.tree_util.tree_leaves(getattr(abstract, f)) for f in missing):
    return None
  return {f: getattr(abstract, f) for f in fields if f in saved}

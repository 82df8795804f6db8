"""Checkpoints of a population: one orbax checkpoint of the stacked state, shared by members.

A single run keeps its own `checkpoints/` (the state as it is). A population of a sweep keeps
one checkpoint of the stacked state (every leaf with a leading member axis, except the shared
step counter) in `<sweep>/populations/<id>/`, so saving 64 members costs one save. Each member
folder holds `population.json`, pointing at that checkpoint and at its index in it; a member
folder can then be resumed alone (`python -m gmf_jax.main --workdir=<member>`, which restores
its slice and goes on with checkpoints of its own) or backfilled with `gmf_jax.diagnose`.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from gmf_jax.members import member, with_member_axis
from gmf_jax.runlog.checkpoint import Checkpointer
from gmf_jax.runlog.files import read_json, write_json

POINTER = "population.json"


class PopulationCheckpoints:
  """Saves and restores a population's state with the members' windows beside it."""

  def __init__(self, population_dir: str | None, member_dirs: list[str | None],
               names: list[str], max_to_keep: int, async_save: bool = True):
    self.names, self.member_dirs = names, member_dirs
    self.stacked = population_dir is not None
    self._started: set[int] = set()  # steps saved in this session (a save may be in flight)
    self._best: tuple[int, Any, dict[str, Any]] | None = None  # see `keep_best`
    if not self.stacked:
      assert len(member_dirs) == 1, "a population of many needs a population_dir"
      self.checkpointer = Checkpointer(member_dirs[0], max_to_keep, async_save)
      return
    os.makedirs(population_dir, exist_ok=True)
    self.directory = os.path.abspath(population_dir)
    write_json(os.path.join(self.directory, POINTER), {"members": names})
    self.checkpointer = Checkpointer(self.directory, max_to_keep, async_save)
    for i, path in enumerate(member_dirs):
      if path is not None:
        pointer = _read_pointer(path) or {}
        pointer.update(checkpoints=os.path.relpath(self.directory, path), index=i,
                       size=len(names), members=names)
        pointer.pop("failed_at", None)
        write_json(os.path.join(path, POINTER), pointer)

  def has(self, step: int, *, best: bool = False) -> bool:
    """Whether `step` is saved, or being saved."""
    return self.checkpointer.has(step, best=best)

  def keep_best(self, step: int, state, meta: dict[str, Any]) -> None:
    """Holds the best state so far (on the device, reached at `step`), written as the best
    checkpoint with the next checkpoint `save`, or at `close`: the best checkpoint on disk
    then always goes with a checkpoint a resume starts from, and a population writes it a
    few times rather than at every evaluation that improved a member."""
    self._best = (step, state, meta)

  def save(self, step: int, state, meta: dict[str, Any], *, best: bool = False) -> None:
    """Saves a checkpoint of `step` (a no-op where it is saved already), and the best state
    held by `keep_best` beside it."""
    if not self.checkpointer.has(step, best=best):
      self.checkpointer.save(step, state if self.stacked else member(state, 0), meta, best=best)
      if not best:
        self._started.add(step)
    if not best:
      self._write_best()

  def _write_best(self) -> None:
    if self._best is not None:
      (step, state, meta), self._best = self._best, None
      self.save(step, state, meta, best=True)

  def member_failed(self, index: int, step: int) -> None:
    """Records that member `index` went non-finite at `step`: checkpoints from then on hold
    no valid state of it."""
    path = self.member_dirs[index]
    if self.stacked and path is not None:
      pointer = _read_pointer(path) or {}
      pointer["failed_at"] = int(step)
      write_json(os.path.join(path, POINTER), pointer)

  def restore_latest(self, like) -> tuple[int, Any, list[dict]] | None:
    """(step, stacked state, each member's metric window), or None without a checkpoint."""
    if self.stacked:
      restored = self.checkpointer.restore_latest(like=like)
    else:
      restored = self.checkpointer.restore_latest(like=member(like, 0))
      if restored is None:  # a sweep member resumed alone: its population's checkpoint
        restored = restore_from_population(self.member_dirs[0], member(like, 0))
      if restored is not None:
        step, state, meta = restored
        restored = step, with_member_axis(state), meta
    if restored is None:
      return None
    step, state, meta = restored
    return step, state, _windows(meta, len(self.names))

  def restore_best(self, like):
    """The stacked best state on the host (populations), to keep each member's best."""
    if not self.stacked or not self.checkpointer.best.all_steps():
      return None
    try:
      step = self.checkpointer.best.latest_step()
      state, _ = self.checkpointer.restore(step, like, best=True)
      return jax.device_get(state)
    except Exception:  # noqa: BLE001 - a lost best checkpoint is rebuilt from the next evals
      return None

  def latest_saved(self) -> int | None:
    """The newest step saved, or being saved in the background (`close` waits for it)."""
    return max([*self.checkpointer.steps(), *self._started], default=None)

  def close(self) -> None:
    """Writes a best state still held (a run that failed, with no final checkpoint), then
    waits for every save."""
    try:
      self._write_best()
    finally:
      self.checkpointer.close()


def _windows(meta: dict[str, Any], size: int) -> list[dict]:
  windows = meta.get("windows")
  if windows is None:
    windows = [meta.get("window", {})]
  return list(windows) + [{}] * (size - len(windows))


def _read_pointer(run_dir: str) -> dict[str, Any] | None:
  path = os.path.join(run_dir, POINTER)
  try:
    return read_json(path) if os.path.exists(path) else None
  except (OSError, ValueError):
    return None


def _population_checkpointer(run_dir: str) -> tuple[Checkpointer, dict[str, Any]] | None:
  pointer = _read_pointer(run_dir)
  if pointer is None:
    return None
  directory = os.path.normpath(os.path.join(run_dir, pointer["checkpoints"]))
  if not os.path.isdir(directory):
    return None
  return Checkpointer(directory, max_to_keep=10**6, async_save=False), pointer


def population_steps(run_dir: str) -> list[int]:
  """The steps of the member's population checkpoint that hold a valid state of it."""
  found = _population_checkpointer(run_dir)
  if found is None:
    return []
  checkpointer, pointer = found
  try:
    return _valid_steps(checkpointer, pointer)
  finally:
    checkpointer.close()


def _valid_steps(checkpointer: Checkpointer, pointer: dict[str, Any]) -> list[int]:
  """Steps saved before the member failed (from then on its slice holds no valid state)."""
  failed_at = pointer.get("failed_at")
  return [s for s in checkpointer.steps() if failed_at is None or s < failed_at]


def restore_from_population(run_dir: str, like, step: int | None = None):
  """Member `run_dir`'s slice of its population checkpoint at `step` (default: the latest
  valid one): (step, state, meta with the member's window), or None."""
  found = _population_checkpointer(run_dir)
  if found is None:
    return None
  checkpointer, pointer = found
  try:
    steps = _valid_steps(checkpointer, pointer)
    if step is None:
      if not steps:
        return None
      step = steps[-1]
    elif step not in steps:
      return None
    index, size = pointer["index"], pointer["size"]
    stacked_like = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((size, *a.shape), a.dtype, sharding=_replicated(a)),
        like.replace(step=None)).replace(step=like.step)
    state, meta = checkpointer.restore(step, stacked_like)
    windows = _windows(meta, size)
    return step, member(state, index), {"window": windows[index]}
  finally:
    checkpointer.close()


def _replicated(leaf):
  """`leaf`'s devices, the whole array on each (None for host arrays: the default device)."""
  sharding = getattr(leaf, "sharding", None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
  return sharding


def member_steps(run_dir: str, own: list[int]) -> list[int]:
  """Every checkpoint step a member folder can restore: its own and its population's."""
  return sorted(set(own) | set(population_steps(run_dir)))


__all__ = ["PopulationCheckpoints", "member_steps", "population_steps",
           "restore_from_population"]

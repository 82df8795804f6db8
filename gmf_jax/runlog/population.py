"""Checkpoints of a population: one orbax checkpoint of the stacked state, shared by members.

A single run keeps its own `checkpoints/` (the state as it is). A population of a sweep keeps
one checkpoint of the stacked state (every leaf with a leading member axis, except the shared
step counter) in `<sweep>/populations/<id>/`, so saving 64 members costs one save. Each member
folder holds `population.json`, pointing at that checkpoint and at its index in it; a member
folder can then be resumed alone (`python -m gmf_jax.main --workdir=<member>`, which restores
its slice and goes on with checkpoints of its own) or backfilled with `gmf_jax.diagnose`.

A population that shrinks (a sweep's early termination) goes on as a new population whose
`population.json` names its parent: the parent's checkpoint at the step it shrank, and which of
the parent's members it holds. Until it saves a checkpoint of its own it restores from there;
each member's pointer keeps the earlier populations it was part of (`earlier`), so every step
it was saved at stays restorable.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from gmf_jax.members import member, take_members, with_member_axis
from gmf_jax.runlog.checkpoint import Checkpointer
from gmf_jax.runlog.files import read_json, write_json

POINTER = "population.json"


@dataclasses.dataclass(frozen=True)
class Parent:
  """Where a shrunk population came from: the parent population's checkpoint folder, the step
  it shrank at, and the parent's index of each of its members."""

  directory: str
  step: int
  indices: tuple[int, ...]

  def to_json(self, here: str) -> dict[str, Any]:
    return {"checkpoints": os.path.relpath(self.directory, here), "step": self.step,
            "indices": list(self.indices)}

  @classmethod
  def from_json(cls, data: dict[str, Any] | None, here: str) -> Parent | None:
    if not data:
      return None
    return cls(os.path.normpath(os.path.join(here, data["checkpoints"])), int(data["step"]),
               tuple(int(i) for i in data["indices"]))


def start_population(population_dir: str, parent: Parent, member_dirs: list[str | None],
                     names: list[str]) -> None:
  """Writes a shrunk population's description (its parent) and moves its members' pointers
  to it, each keeping the parent's checkpoints for the steps up to `parent.step`. Running it
  again changes nothing."""
  directory = os.path.abspath(population_dir)
  os.makedirs(directory, exist_ok=True)
  write_json(os.path.join(directory, POINTER),
             {"members": names, "parent": parent.to_json(directory)})
  parent_names = (_read_pointer(parent.directory) or {}).get("members", [])
  for i, path in enumerate(member_dirs):
    if path is None:
      continue
    pointer = _read_pointer(path) or {}
    here = os.path.normpath(os.path.join(path, pointer.get("checkpoints", "")))
    if pointer and here == os.path.normpath(parent.directory):
      earlier = [e for e in pointer.get("earlier", []) if e["until"] < parent.step]
      earlier.append({"checkpoints": pointer["checkpoints"], "index": pointer["index"],
                      "size": pointer.get("size", len(parent_names)),
                      "until": parent.step, **({"failed_at": pointer["failed_at"]}
                                               if "failed_at" in pointer else {})})
      pointer = {"earlier": earlier}
    elif pointer and os.path.normpath(here) == directory:
      pass  # moved already
    pointer.update(checkpoints=os.path.relpath(directory, path), index=i, size=len(names),
                   members=names)
    write_json(os.path.join(path, POINTER), pointer)


class PopulationCheckpoints:
  """Saves and restores a population's state with the members' windows beside it."""

  def __init__(self, population_dir: str | None, member_dirs: list[str | None],
               names: list[str], max_to_keep: int, async_save: bool = True):
    self.names, self.member_dirs = names, member_dirs
    self.stacked = population_dir is not None
    self._started: set[int] = set()  # steps saved in this session (a save may be in flight)
    self._best: tuple[int, Any, dict[str, Any]] | None = None  # see `keep_best`
    self._closed = False
    if not self.stacked:
      assert len(member_dirs) == 1, "a population of many needs a population_dir"
      self.checkpointer = Checkpointer(member_dirs[0], max_to_keep, async_save)
      return
    os.makedirs(population_dir, exist_ok=True)
    self.directory = os.path.abspath(population_dir)
    described = _read_pointer(self.directory) or {}
    self.parent = Parent.from_json(described.get("parent"), self.directory)
    write_json(os.path.join(self.directory, POINTER),
               {"members": names, **({"parent": described["parent"]} if self.parent else {})})
    self.checkpointer = Checkpointer(self.directory, max_to_keep, async_save)
    for i, path in enumerate(member_dirs):
      if path is not None:
        pointer = _read_pointer(path) or {}
        pointer.update(checkpoints=os.path.relpath(self.directory, path), index=i,
                       size=len(names), members=names)
        pointer.pop("failed_at", None)
        pointer.get("earlier", []).sort(key=lambda e: e["until"])
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
      if restored is None and self.parent is not None:
        return self._from_parent(like)
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

  def _from_parent(self, like) -> tuple[int, Any, list[dict]] | None:
    """The parent's checkpoint at the step this population began, its members picked."""
    parent = self.parent
    checkpointer = Checkpointer(parent.directory, max_to_keep=10**6, async_save=False)
    try:
      if parent.step not in checkpointer.steps():
        return None
      state, meta = checkpointer.restore(parent.step,
                                         _stacked_like(_one_member(like), _size(parent)))
    finally:
      checkpointer.close()
    windows = _windows(meta, _size(parent))
    return (parent.step, take_members(state, parent.indices),
            [windows[i] for i in parent.indices])

  def restore_best(self, like):
    """The stacked best state on the host (populations), to keep each member's best: this
    population's best checkpoint, else its parent's (its members picked)."""
    if not self.stacked:
      return None
    try:
      if self.checkpointer.best.all_steps():
        step = self.checkpointer.best.latest_step()
        state, _ = self.checkpointer.restore(step, like, best=True)
        return jax.device_get(state)
      return self._parent_best(like)
    except Exception:  # noqa: BLE001 - a lost best checkpoint is rebuilt from the next evals
      return None

  def _parent_best(self, like):
    parent = self.parent
    if parent is None:
      return None
    checkpointer = Checkpointer(parent.directory, max_to_keep=10**6, async_save=False)
    try:
      steps = [s for s in checkpointer.best.all_steps() if s <= parent.step]
      if not steps:
        return None
      state, _ = checkpointer.restore(max(steps), _stacked_like(_one_member(like), _size(parent)),
                                      best=True)
      return _host_members(jax.device_get(state), parent.indices)
    finally:
      checkpointer.close()

  def latest_saved(self) -> int | None:
    """The newest step saved, or being saved in the background (`close` waits for it)."""
    return max([*self.checkpointer.steps(), *self._started], default=None)

  def wait(self) -> None:
    """Waits for the saves in flight."""
    self.checkpointer.wait()

  def close(self) -> None:
    """Writes a best state still held (a run that failed, with no final checkpoint), then
    waits for every save. Closing again does nothing."""
    if self._closed:
      return
    self._closed = True
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


def _sources(run_dir: str) -> list[dict[str, Any]]:
  """Where a member's population checkpoints are, newest population first: each entry's
  folder, the member's index and the population's size there, and the steps that hold a valid
  state of it (below `failed_at`; up to `until` in a population it left when it shrank)."""
  pointer = _read_pointer(run_dir)
  if pointer is None:
    return []
  entries = [pointer, *reversed(pointer.get("earlier", []))]
  out = []
  for entry in entries:
    directory = os.path.normpath(os.path.join(run_dir, entry["checkpoints"]))
    if os.path.isdir(directory):
      out.append({**entry, "directory": directory,
                  "size": entry.get("size", len(pointer.get("members", [])))})
  return out


def _valid_steps(steps: list[int], entry: dict[str, Any]) -> list[int]:
  """Steps saved before the member failed (from then on its slice holds no valid state), and
  not after it left the population."""
  failed_at, until = entry.get("failed_at"), entry.get("until")
  return [s for s in steps if (failed_at is None or s < failed_at)
          and (until is None or s <= until)]


def population_steps(run_dir: str) -> list[int]:
  """The steps of the member's population checkpoints that hold a valid state of it."""
  found: set[int] = set()
  for entry in _sources(run_dir):
    checkpointer = Checkpointer(entry["directory"], max_to_keep=10**6, async_save=False)
    try:
      found |= set(_valid_steps(checkpointer.steps(), entry))
    finally:
      checkpointer.close()
  return sorted(found)


def restore_from_population(run_dir: str, like, step: int | None = None):
  """Member `run_dir`'s slice of its population checkpoint at `step` (default: the latest
  valid one): (step, state, meta with the member's window), or None."""
  for entry in _sources(run_dir):
    checkpointer = Checkpointer(entry["directory"], max_to_keep=10**6, async_save=False)
    try:
      steps = _valid_steps(checkpointer.steps(), entry)
      if step is None and steps:
        chosen = steps[-1]
      elif step in steps:
        chosen = step
      else:
        continue
      index, size = entry["index"], entry["size"]
      state, meta = checkpointer.restore(chosen, _stacked_like(like, size))
      return chosen, member(state, index), {"window": _windows(meta, size)[index]}
    finally:
      checkpointer.close()
  return None


def _stacked_like(like, size: int):
  """The structure of a population of `size` members like the member `like`."""
  step = like.step
  member_like = like.replace(step=None)
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct((size, *a.shape), a.dtype, sharding=_replicated(a)),
      member_like).replace(step=step)


def _host_members(state, indices):
  """Members `indices` of a population's state on the host (numpy: no program to compile)."""
  step = state.step
  picked = jax.tree_util.tree_map(lambda a: np.take(np.asarray(a), list(indices), axis=0),
                                  state.replace(step=None))
  return picked.replace(step=step)


def _one_member(like):
  """The structure of one member of the population `like` (its member axis dropped)."""
  step = like.step
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=_replicated(a)),
      like.replace(step=None)).replace(step=step)


def _size(parent: Parent) -> int:
  return len((_read_pointer(parent.directory) or {}).get("members", []))


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
